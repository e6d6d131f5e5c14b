"""``moesweep launch``: validate the space, start (or join) Ray, run the Tuner, write the tables.

Without ``--address`` Ray starts locally on loopback with this machine's CPUs/GPUs and a bounded object
store, and stops at the end. Ray's own logs go to ``<results>/ray.log``; the terminal shows a compact
progress display. ``--resume`` restores the Tune experiment: finished trials are not re-run and the
tables are rebuilt from the checkpoints, so no row is ever duplicated.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from moesweep.config import ConfigError
from moesweep.results import TRIAL_TABLE_KEYS, read_json, upsert_table, write_json, write_table
from moesweep.sweep.spec import SweepSpec

log = logging.getLogger("moesweep")


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a sweep lives: Tune's storage root + name, and the directory holding our tables."""

    storage: str  # local absolute path or URI given to Tune
    name: str
    tables_dir: Path  # local directory of the Parquet tables and manifest
    remote: str | None  # URI the tables are mirrored to, for non-local storage

    @property
    def experiment(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def locate(storage: str | None, name: str) -> Location:
    if storage is None or "://" not in storage:
        root = Path(storage or "results").expanduser().resolve()
        return Location(str(root), name, root / name, None)
    return Location(storage, name, Path("results").resolve() / name, f"{storage.rstrip('/')}/{name}")


def sync_tables(loc: Location) -> None:
    """Mirror the tables and manifest to remote storage (pyarrow filesystems: s3://, gs://, file://)."""
    if loc.remote is None:
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(loc.remote)
    fs.create_dir(root, recursive=True)
    for p in loc.tables_dir.iterdir():
        if p.suffix in (".parquet", ".json", ".html", ".log") and p.is_file():
            pafs.copy_files(str(p), f"{root}/{p.name}", destination_filesystem=fs)


def start_ray(address: str | None, tables_dir: Path) -> dict[str, Any]:
    """Start a loopback-only local Ray (or connect to ``address``); send Ray's logs to a file."""
    import ray

    tables_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(tables_dir / "ray.log")
    for name in ("ray", "ray.tune", "ray.train"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    kwargs: dict[str, Any] = dict(log_to_driver=False, include_dashboard=False, configure_logging=False,
                                  ignore_reinit_error=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        import psutil

        mem = psutil.virtual_memory().total
        obj = int(min(2 << 30, max(256 << 20, 0.15 * mem)))  # bounded: small hosts need RAM for trials
        ray.init(num_cpus=os.cpu_count(), object_store_memory=obj, _node_ip_address="127.0.0.1", **kwargs)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return {"address": address or "local", "nodes": len(nodes), "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("moesweep", "torch", "torchvision", "ray", "optuna", "pandas", "pyarrow", "plotly"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def _git_sha() -> str | None:
    import subprocess

    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def resume_command(space: str, loc: Location, address: str | None) -> str:
    parts = ["moesweep", "launch", "--space", space, "--name", loc.name, "--resume"]
    if loc.storage != str(Path("results").resolve()):
        parts += ["--storage", loc.storage]
    if address:
        parts += ["--address", address]
    return shlex.join(parts)


def build_tuner(spec: SweepSpec, points: list[dict[str, Any]], data_arrays: dict[str, Any], loc: Location,
                resume: bool, max_concurrent: int | None, total: int):
    from ray import tune

    from moesweep.sweep.callbacks import ProgressCallback, TablesCallback
    from moesweep.sweep.space import view
    from moesweep.sweep.trainable import run_configuration

    def resources(config: dict[str, Any]):
        r = spec.resources.for_point(view(spec, dict(config.get("point", config))))
        return tune.PlacementGroupFactory([{"CPU": r["cpu"], "GPU": r["gpu"]}])

    trainable = tune.with_resources(tune.with_parameters(run_configuration, data=data_arrays, spec=spec), resources)
    if resume and tune.Tuner.can_restore(loc.experiment):
        return tune.Tuner.restore(loc.experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    # --resume before Tune saved any state (interrupted during start-up): start the sweep afresh
    search_alg, num_samples, param_space = None, 1, {"point": tune.grid_search(points)}
    if spec.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        from moesweep.sweep.space import optuna_space

        search_alg = OptunaSearch(space=optuna_space(spec), metric=spec.metric, mode=spec.mode, seed=0)
        num_samples, param_space = spec.num_samples, {}
    scheduler = None
    if spec.scheduler.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler

        s = spec.scheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.max_t or spec.base_cfg.train.epochs,
                                  grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
        max_concurrent_trials=max_concurrent or spec.max_concurrent, reuse_actors=True,
        trial_dirname_creator=lambda t: f"cfg_{t.trial_id}", trial_name_creator=lambda t: f"cfg_{t.trial_id}")
    run_config = tune.RunConfig(
        name=loc.name, storage_path=loc.storage, verbose=0,
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[TablesCallback(spec, loc.name, str(loc.tables_dir)), ProgressCallback(spec, total)])
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def write_final_tables(spec: SweepSpec, loc: Location, results) -> dict[str, int]:
    """Rebuild every trial table from the ResultGrid and the checkpoints (authoritative, idempotent)."""
    from moesweep.sweep.callbacks import point_of
    from moesweep.sweep.tables import config_rows, rows_for_configuration

    tables: dict[str, list[dict]] = {"trials": [], "epochs": [], "experts": [], "expert_class": []}
    # Tune's own trial states tell an early-stopped trial (TERMINATED) from an interrupted one.
    tune_trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None) or []
    matched = len(tune_trials) == len(results)
    states = [t.status for t in tune_trials] if matched else [None] * len(results)
    configs_ = [r.config if r.config is not None else (t.config if matched else None)
                for r, t in zip(results, tune_trials if matched else [None] * len(results))]
    for r, state, config in zip(results, states, configs_):
        if config is None:  # never started (e.g. the sweep was interrupted): no rows yet
            continue
        metrics = r.metrics or {}
        if r.error is not None:
            status, err = "error", f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1][:300]}"
        elif metrics.get("trial_status") in ("done", "failed"):
            status, err = "done", None  # "failed" seeds are marked per seed from metrics["final"]
        elif state in ("PENDING", "PAUSED", "RUNNING"):
            status, err = ("interrupted" if metrics else "pending"), None
        else:
            status, err = ("stopped" if metrics else "pending"), None
        ckpt = r.checkpoint
        rows = rows_for_configuration(spec, loc.name, point_of(config), metrics, status, err,
                                      ckpt.filesystem if ckpt else None, ckpt.path if ckpt else None)
        for k, v in rows.items():
            tables[k] += v
    # Upsert, never overwrite: rows the live callback wrote for trials this ResultGrid lacks (e.g. after
    # an interrupt) survive, and rows of the same key are replaced, so nothing is ever duplicated.
    merged = {name: upsert_table(loc.tables_dir, name, tables[name], key) for name, key in TRIAL_TABLE_KEYS.items()}
    configs = config_rows(merged["trials"].to_dict("records"), merged["epochs"].to_dict("records"))
    write_table(loc.tables_dir, "configs", configs)
    return {**{k: len(v) for k, v in merged.items()}, "configs": len(configs)}


def launch(space: str, name: str | None = None, storage: str | None = None, address: str | None = None,
           resume: bool = False, max_concurrent: int | None = None, dry_run: bool = False,
           no_analysis: bool = False, console=None) -> int:
    """Run a sweep end to end. Returns the process exit code (0 ok, 130 interrupted, 1 trials failed)."""
    from rich.console import Console

    from moesweep.sweep.space import plan, validate
    from moesweep.sweep.spec import load_spec

    console = console or Console(highlight=False, soft_wrap=True)
    spec = load_spec(space)
    if name:
        spec = dataclasses.replace(spec, name=name)
    try:
        points = validate(spec)
    except ConfigError as e:
        raise ConfigError(f"{space}: {e}") from None
    the_plan = plan(spec, points)
    console.print(f"[bold]{spec.name}[/]: {the_plan['configurations']} configurations x {len(spec.seeds)} seeds "
                  f"= {the_plan['trials']} trials; per head {the_plan['per_head'] or 'sampled by optuna'}; "
                  f"resources {the_plan['resources'] or spec.resources}; {spec.search_alg}/{spec.scheduler.kind}")
    if dry_run:
        return 0
    loc = locate(storage, spec.name)
    manifest_path = loc.tables_dir / "manifest.json"
    if not resume and (manifest_path.exists() or (loc.tables_dir / "tuner.pkl").exists()):
        raise ConfigError(f"{loc.tables_dir}: a sweep named {spec.name!r} exists; add --resume or choose --name")
    import ray

    from moesweep.data import load_data
    from moesweep.sweep.trainable import data_to_arrays

    t0 = time.time()
    cluster = start_ray(address, loc.tables_dir)
    manifest = read_json(manifest_path) if resume else None
    manifest = manifest or {"name": spec.name, "space_file": str(space), "start_time": t0}
    manifest.update({"command": shlex.join(["moesweep"] + sys.argv[1:]) if sys.argv else "", "git_sha": _git_sha(),
                     "versions": _versions(), "cluster": cluster, "plan": the_plan, "storage": loc.storage,
                     "space": read_raw_space(space, spec.name), "resume_command": resume_command(space, loc, address),
                     "status": "running"})
    write_json(manifest_path, manifest)
    interrupted = False
    try:
        if resume and not (loc.tables_dir / "tuner.pkl").exists() and loc.remote is None:
            console.print("nothing saved by Tune yet: starting the sweep from the beginning")
        data = load_data(spec.base_cfg.data, "cpu")
        tuner = build_tuner(spec, points, data_to_arrays(data), loc, resume, max_concurrent, the_plan["configurations"])
        results = tuner.fit()
        if results is not None:
            counts = write_final_tables(spec, loc, results)
            # Tune returns normally after a SIGINT: unfinished trials mean the sweep was interrupted.
            interrupted = interrupted or any(r.error is None and not (r.metrics or {}).get("trial_status")
                                             for r in results) or len(results) < the_plan["configurations"]
            console.print(f"tables: {', '.join(f'{k} {v} rows' for k, v in counts.items())} -> {loc.tables_dir}")
        manifest.update({"end_time": time.time(), "wall_s": time.time() - t0,
                         "status": "interrupted" if interrupted else "done"})
        write_json(manifest_path, manifest)
        if not interrupted and not no_analysis and spec.analysis.what:
            from moesweep.sweep.tasks import run_analysis

            run_analysis(loc.tables_dir, address="__connected__", console=console)
        if not interrupted:
            from moesweep.report import build_report

            console.print(f"report: {build_report(loc.tables_dir)}")
        sync_tables(loc)
    except KeyboardInterrupt:  # before or after Tune's own SIGINT handling (start-up, analysis)
        interrupted = True
        manifest.update({"end_time": time.time(), "status": "interrupted"})
        write_json(manifest_path, manifest)
    finally:
        ray.shutdown()
    if interrupted:
        console.print(f"[yellow]interrupted[/]: state saved. Resume with:\n  {manifest['resume_command']}")
        return 130
    return 0


def read_raw_space(space: str, name: str) -> Any:
    from moesweep.config import load_yaml

    raw = load_yaml(space)
    if isinstance(raw, dict):
        raw = {**raw, "name": name}
    return raw
