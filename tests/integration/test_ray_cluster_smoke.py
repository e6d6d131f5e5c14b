"""Real 2-node Ray clusters on one host (head + worker as separate processes, token auth).

The Python helper (tests/ray_cluster.py): 1-CPU tasks land on both nodes, a driver with another
token is refused, and stopping leaves none of the cluster's processes behind. The shell script
(cluster/local.sh): head and worker join, a driver with the token file connects, `stop` ends them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ray_cluster import LoopbackCluster, free_port, proc_table, process_identity, ray_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process tracking reads /proc"),
    pytest.mark.skipif(ray_cli() is None, reason="the `ray` CLI is not installed"),
    pytest.mark.timeout(180),
]

# Two 1-CPU tasks on a cluster of two 1-CPU nodes: while the first sleeps it holds its node's only
# CPU, so the scheduler must place the second on the other node.
TWO_TASKS = """
import json, time, ray
ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def where() -> str:
    time.sleep(2.0)
    return ray.get_runtime_context().get_node_id()

placed = ray.get([where.remote() for _ in range(2)])
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
print(json.dumps({"placed": placed, "alive": alive}))
"""

CONNECT = """
import ray
ray.init(logging_level="ERROR", log_to_driver=False)
print("connected")
"""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_two_node_cluster_spreads_tasks_and_cleans_up() -> None:
    with LoopbackCluster(num_workers=1, cpus_per_node=1, object_store_mb=100) as cluster:
        assert cluster.address.startswith("127.0.0.1:")
        assert cluster.env["RAY_AUTH_MODE"] == "token" and cluster.env["RAY_ADDRESS"] == cluster.address

        proc = cluster.run_python(TWO_TASKS, timeout=90)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert len(out["alive"]) == 2
        assert len(set(out["placed"])) == 2, out
        assert set(out["placed"]) == set(out["alive"])

        # A driver with the right address but another token must be refused. One connection
        # attempt instead of Ray's default 20 (one per second) keeps the refusal fast.
        wrong = {**cluster.env, "RAY_AUTH_TOKEN": "0" * 64, "RAY_gcs_server_port_wait_time_s": "1"}
        refused = cluster.run_python(CONNECT, env=wrong, timeout=90)
        assert refused.returncode != 0 and "connected" not in refused.stdout
        assert "auth" in refused.stderr.lower(), refused.stderr[-3000:]

        pids = cluster.pids()
        comms = [_comm(p) for p in pids]
        # The tracking must see the real Ray daemons: one GCS, one raylet per node.
        assert comms.count("gcs_server") == 1 and comms.count("raylet") == 2, comms
        identities = {process_identity(p) for p in pids} - {None}

    assert all(process_identity(pid) != (pid, start) for pid, start in identities)
    assert cluster.pids() == set()
    assert not cluster.temp_root.exists()


def _session_members(sids: set[int]) -> set[tuple[int, int]]:
    """Identities of live processes whose session id is in ``sids``."""
    return {process_identity(pid) for pid, _, sid, _ in proc_table() if sid in sids} - {None}


def test_local_sh_head_worker_status_stop(tmp_path: Path) -> None:
    """cluster/local.sh on one host: head + worker join with token auth; `stop` ends only its PIDs."""
    script = Path(__file__).resolve().parents[2] / "cluster" / "local.sh"
    state = Path(tempfile.mkdtemp(prefix="ls", dir="/tmp"))  # short: Ray's socket paths live under it
    token = tmp_path / "token"
    env = {**os.environ, "MOESWEEP_RAY": str(ray_cli()), "MOESWEEP_RAY_DIR": str(state),
           "MOESWEEP_RAY_TOKEN_FILE": str(token), "MOESWEEP_RAY_PORT": str(free_port()),
           "MOESWEEP_RAY_CPUS": "1", "MOESWEEP_RAY_OBJECT_STORE_MB": "100"}

    def sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True,
                              timeout=150)

    try:
        head = sh("head")
        assert head.returncode == 0, head.stdout + head.stderr
        assert len(token.read_text()) == 64 and (token.stat().st_mode & 0o077) == 0
        address = (state / "address").read_text().strip()
        assert f"--address {address}" in head.stdout  # the printed `moesweep launch` line
        worker = sh("worker", address)
        assert worker.returncode == 0, worker.stdout + worker.stderr

        driver_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        driver_env.pop("RAY_AUTH_TOKEN", None)
        code = ("import ray; ray.init(address='%s', logging_level='ERROR');"
                "print(sum(n['Alive'] for n in ray.nodes()))" % address)
        proc = subprocess.run([sys.executable, "-c", code], env=driver_env, capture_output=True,
                              text=True, timeout=90)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == "2"

        status = sh("status")
        assert status.stdout.count(": running") == 2, status.stdout
        sids = {int(line.split()[0]) for line in (state / "nodes.pid").read_text().splitlines()}
        members = _session_members(sids)
        assert len(members) >= 2 * 3  # per node at least: ray start, raylet, agents
    finally:
        stop = sh("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert stop.stdout.count(": stopped") == 2, stop.stdout
    assert not (state / "nodes.pid").exists()
    assert all(process_identity(pid) != (pid, start) for pid, start in members)
    shutil.rmtree(state, ignore_errors=True)
