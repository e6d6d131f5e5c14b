"""A real multi-node Ray cluster on loopback for tests: one head and N workers as separate processes.

Each node is its own ``ray start --block`` process (own session / process group, own ``--temp-dir``,
free ports), so the cluster can run beside other Ray instances on the same machine and is torn
down by its own PIDs only -- never ``ray stop``, which would kill every Ray process of the user.

Token authentication (Ray 2.60): every process of the cluster -- head, workers, and any driver --
gets ``RAY_AUTH_MODE=token`` and the same ``RAY_AUTH_TOKEN`` (a fresh random hex string per
cluster). ``RAY_AUTH_TOKEN`` has the highest precedence among Ray's token sources, so nothing is
read from or written to ``~/.ray/auth_token``.

Usage::

    with LoopbackCluster(num_workers=1, cpus_per_node=1) as cluster:
        proc = cluster.run_python("import ray; ray.init(); print(len(ray.nodes()))")
        # or: subprocess.run([...], env=cluster.env)  -- RAY_ADDRESS is set in cluster.env

The pytest process itself never imports Ray or joins the cluster: Ray caches its auth mode per
process, and a driver inside pytest would leak into other tests.

Ray advertises the host's routable IP even when told ``--node-ip-address=127.0.0.1``
(``resolve_ip_for_localhost``) and its GCS listens on all interfaces; ``127.0.0.1:PORT`` still
works as the address, and the token keeps other hosts out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Counts the alive nodes from a throw-away driver; exits 0 once `want` nodes are alive.
_WAIT_NODES_SNIPPET = """
import sys, time, ray
want, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)
while True:
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    if alive >= want or time.monotonic() > deadline:
        print(alive)
        sys.exit(0 if alive >= want else 1)
    time.sleep(0.2)
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_cli() -> str | None:
    """Path of the ``ray`` CLI of the running interpreter's environment, or None."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


def process_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks) -- start time guards against PID reuse; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() is missing
        return None
    return pid, int(fields[19])  # field 22 of stat = starttime


def proc_table() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, session id, command line) for every readable process."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        rows.append((int(entry.name), int(fields[1]), int(fields[3]), cmdline))
    return rows


@dataclass
class _Node:
    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log_path: Path


@dataclass
class LoopbackCluster:
    """A head plus ``num_workers`` worker nodes on 127.0.0.1, each a separate ``ray start`` process.

    Args:
        num_workers: worker nodes besides the head.
        cpus_per_node: ``--num-cpus`` of every node (head included): the scheduler's view, not a
            real limit, so 1 CPU per node lets a 2-core host run a 2-node cluster.
        object_store_mb: ``--object-store-memory`` per node in MB (Ray's minimum is 75).
        head_resources: extra custom resources of the head, e.g. ``{"head": 1}``.
        start_timeout_s: how long to wait for all nodes to be alive.
        keep_temp: keep the temp root (node logs) after stopping, for debugging.

    After ``start()`` (or entering the ``with`` block): ``address`` ("127.0.0.1:PORT"), ``env``
    (a full environment for driver subprocesses: auth variables plus ``RAY_ADDRESS``),
    ``auth_env`` (only the variables a driver must add to its own environment) and ``temp_root``.
    """

    num_workers: int = 1
    cpus_per_node: int = 1
    object_store_mb: int = 100
    head_resources: dict[str, float] = field(default_factory=dict)
    start_timeout_s: float = 90.0
    keep_temp: bool = False

    address: str = field(init=False, default="")
    auth_env: dict[str, str] = field(init=False, default_factory=dict)
    temp_root: Path = field(init=False, default=Path())
    _nodes: list[_Node] = field(init=False, default_factory=list)
    _known: set[tuple[int, int]] = field(init=False, default_factory=set)

    # ---- public API -------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus the cluster's auth variables and ``RAY_ADDRESS`` (for subprocesses)."""
        return {**os.environ, **self.auth_env, "RAY_ADDRESS": self.address}

    def start(self) -> LoopbackCluster:
        """Start the head, then the workers; return once every node is alive. Raises RuntimeError."""
        cli = ray_cli()
        if cli is None:
            raise RuntimeError("the `ray` CLI was not found beside the Python interpreter")
        # Short root: Ray puts unix sockets under <temp-dir>/session_<timestamp>_<pid>/sockets/,
        # and socket paths are limited to ~107 bytes.
        self.temp_root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.auth_env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),  # same generator Ray uses for its own tokens
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        try:
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            head_args = ["--head", f"--port={port}", "--include-dashboard=false"]
            if importlib.util.find_spec("grpc") is not None:
                # With Ray Client installed the head binds 10001 unless told otherwise; without it,
                # passing the flag is an error.
                head_args.append(f"--ray-client-server-port={free_port()}")
            if self.head_resources:
                head_args.append(f"--resources={json.dumps(self.head_resources)}")
            self._start_node(cli, "head", head_args)
            self._wait_for_port(port)
            for i in range(self.num_workers):
                self._start_node(cli, f"w{i}", [f"--address={self.address}"])
            self._wait_for_nodes(1 + self.num_workers)
        except BaseException:
            self.stop()
            raise
        return self

    def run_python(self, code: str, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None,
                   cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run ``python -c code *args`` as a driver of this cluster (``env`` defaults to ``self.env``).

        Returns the completed process with text stdout/stderr; raises TimeoutExpired after ``timeout``.
        """
        return subprocess.run([sys.executable, "-c", code, *args], env=self.env if env is None else env,
                              capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def pids(self) -> set[int]:
        """PIDs of every live process this cluster started (node CLIs, GCS, raylets, agents, workers)."""
        self._snapshot()
        return {pid for pid, _ in self._known if process_identity(pid) == (pid, _)}

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop workers, then the head, by their own PIDs; SIGKILL what remains. Raises if any survive."""
        self._snapshot()
        # Workers first, so they do not spend time reconnecting to a vanished head.
        for node in reversed(self._nodes):
            _signal_group(node.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self._alive() and time.monotonic() < deadline:
            self._snapshot()  # catch workers spawned while shutting down
            time.sleep(0.2)
        for node in self._nodes:
            _signal_group(node.proc, signal.SIGKILL)
        for pid, _ in self._alive():
            _kill(pid, signal.SIGKILL)
        for node in self._nodes:
            try:
                node.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = self._alive()
        self._nodes.clear()
        if self.temp_root != Path() and not self.keep_temp and not survivors:
            shutil.rmtree(self.temp_root, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray processes survived stop(): {sorted(p for p, _ in survivors)}")

    def logs(self, tail_lines: int = 40) -> str:
        """The last lines of every node's ``ray start`` output (for failure messages)."""
        parts = []
        for node in self._nodes:
            text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
            parts.append(f"--- {node.name} ---\n" + "\n".join(text.splitlines()[-tail_lines:]))
        return "\n".join(parts)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals --------------------------------------------------------------------------
    def _start_node(self, cli: str, name: str, role_args: list[str]) -> None:
        temp_dir = self.temp_root / name
        temp_dir.mkdir()
        log_path = self.temp_root / f"{name}.log"
        cmd = [cli, "start", "--block", *role_args, "--node-ip-address=127.0.0.1",
               f"--node-name={name}", f"--temp-dir={temp_dir}",
               f"--num-cpus={self.cpus_per_node}", "--num-gpus=0",
               f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
               # 0 = let the OS choose, so several nodes (and other clusters) share the host;
               # the defaults (52365, 10002-19999) would collide between nodes.
               "--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0",
               "--disable-usage-stats"]
        env = {**os.environ, **self.auth_env,
               # Drain on SIGTERM waits up to 30 s by default; a test cluster has nothing to drain.
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
               # A joining node polls the GCS for the head's session and node info ~once a second,
               # 20 times by default; on a loaded 2-core host the head can take longer than that.
               "RAY_NUM_REDIS_GET_RETRIES": str(max(20, int(self.start_timeout_s)))}
        env.pop("RAY_ADDRESS", None)
        with open(log_path, "wb") as log:
            # Own session: the node and everything it spawns share a process group we can signal.
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._nodes.append(_Node(name, proc, temp_dir, log_path))
        self._snapshot()

    def _wait_for_port(self, port: int) -> None:
        """Block until the head's GCS accepts TCP connections (or the head process died)."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._check_nodes_running()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"head GCS port {port} not open after {self.start_timeout_s}s\n{self.logs()}")

    def _wait_for_nodes(self, want: int) -> None:
        remaining = max(5.0, self.start_timeout_s)
        proc = subprocess.run([sys.executable, "-c", _WAIT_NODES_SNIPPET, str(want), str(remaining)],
                              env=self.env, capture_output=True, text=True, timeout=remaining + 60,
                              cwd=self.temp_root)
        self._snapshot()
        self._check_nodes_running()
        if proc.returncode != 0:
            raise RuntimeError(f"only {proc.stdout.strip() or '?'} of {want} nodes alive\n"
                               f"{proc.stderr[-3000:]}\n{self.logs()}")

    def _check_nodes_running(self) -> None:
        for node in self._nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"node {node.name} exited with {node.proc.returncode}\n{self.logs()}")

    def _snapshot(self) -> None:
        """Remember every process that belongs to this cluster, while the tree links still exist.

        Members: the node CLI processes, their descendants, anything in their sessions, and any
        process whose command line names our temp root (workers that re-parented or re-grouped).
        """
        table = proc_table()
        roots = {n.proc.pid for n in self._nodes}
        members = set(roots)
        children: dict[int, list[int]] = {}
        for pid, ppid, _, _ in table:
            children.setdefault(ppid, []).append(pid)
        stack = list(roots)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in members:
                    members.add(child)
                    stack.append(child)
        marker = str(self.temp_root)
        for pid, _, sid, cmdline in table:
            if sid in roots or (self.temp_root != Path() and marker in cmdline):
                members.add(pid)
        members.discard(os.getpid())
        for pid in members:
            ident = process_identity(pid)
            if ident is not None:
                self._known.add(ident)

    def _alive(self) -> list[tuple[int, int]]:
        return [ident for ident in self._known if process_identity(ident[0]) == ident]


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process group led by ``proc`` (its own session, see ``_start_node``).

    Only while ``proc`` is unreaped: until then its PID, hence the group id, cannot be reused.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
