"""Post-sweep analysis as Ray tasks: one task per (checkpoint, analysis, split), rows into Parquet.

Idempotent: every job is keyed by (trial, analysis, split, params_hash) in ``tasks.parquet``; jobs already
``done`` are skipped, rows are upserted on their keys, and rows are written as each task finishes, so a
crash loses at most the tasks in flight and a re-run completes without duplicates.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from moesweep.analysis.jobs import SELECTION_RULE, Job, batched, fixed_sample, make_jobs, run_job, select_trials
from moesweep.config import ConfigError
from moesweep.results import read_json, read_table, upsert_table, write_json
from moesweep.sweep.spec import parse_spec

# Tables hold the latest analysis of each (checkpoint, split): a job's rows replace that group's older
# rows (e.g. from other settings, another params_hash), so a table never mixes two settings.
ROW_GROUPS = {
    "sharpness": ["trial_id", "split"], "spectrum": ["trial_id", "split"], "landscape": ["trial_id", "split"],
    "landscape_checks": ["trial_id", "split"], "latency": ["trial_id"],
}
LEDGER_KEY = ["trial_id", "analysis", "split", "params_hash"]  # a job is done at these settings
LEDGER_GROUP = ["trial_id", "analysis", "split"]  # the ledger keeps the latest attempt per job


def fetch_checkpoint(location: str, dest: str) -> str:
    """A checkpoint directory any node can read: local paths as they are, URIs copied to ``dest``."""
    if "://" not in location:
        return location
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(location)
    pafs.copy_files(path, dest, source_filesystem=fs)
    return dest


def _execute(job: Job, samples: dict[str, Any], acfg, image_shape) -> dict[str, Any]:
    """Body of the Ray task (kept module-level so it pickles by reference)."""
    import ray
    import torch

    from moesweep.checkpoint import load_model

    t0 = time.perf_counter()
    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    torch.set_num_threads(threads)
    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="moesweep-an-") as tmp:
        model, _, _ = load_model(fetch_checkpoint(job.checkpoint, tmp), device=device)
    batches = None
    if job.split in samples:
        x, y = samples[job.split]
        xt, yt = torch.from_numpy(np.array(x)).to(device), torch.from_numpy(np.array(y)).to(device)
        batches = batched(xt, yt, acfg.batch_size)
    rows = run_job(job, model, batches, acfg, image_shape, device, threads)
    return {"rows": rows, "seconds": time.perf_counter() - t0, "node_id": ray.get_runtime_context().get_node_id()}


def plan_jobs(results_dir: Path, what: list[str] | None, samples: int | None, top: int | None):
    manifest = read_json(results_dir / "manifest.json")
    if not manifest or "space" not in manifest:
        raise ConfigError(f"{results_dir}/manifest.json: missing or has no resolved space")
    spec = parse_spec(manifest["space"])
    acfg = spec.analysis
    changes: dict[str, Any] = {}
    if what is not None:
        changes["what"] = tuple(what)
    if samples is not None:
        changes["samples"] = samples
    if top is not None:
        changes["top"] = top
    acfg = type(acfg)(**{**dataclasses.asdict(acfg), **changes})  # re-validates (unknown analyses etc.)
    trials = read_table(results_dir, "trials")
    selected = select_trials(trials, acfg.top)
    jobs = make_jobs(selected, acfg, list(acfg.what))
    manifest["selection"] = {"rule": SELECTION_RULE, "top": acfg.top,
                             "trial_ids": selected["trial_id"].tolist(),
                             "config_ids": sorted(set(selected["config_id"]))}
    write_json(results_dir / "manifest.json", manifest)
    return spec, acfg, jobs, manifest


def _ledger_done(results_dir: Path) -> set[tuple]:
    led = read_table(results_dir, "tasks")
    led = led[led["status"] == "done"]
    return set(map(tuple, led[LEDGER_KEY].astype(str).values.tolist()))


def run_analysis(results_dir: str | Path, what: list[str] | None = None, samples: int | None = None,
                 top: int | None = None, address: str | None = None, console=None) -> int:
    """Run the analyses of a finished sweep. ``address="__connected__"``: use the current Ray session."""
    import ray
    from rich.console import Console

    from moesweep.data import load_data
    from moesweep.sweep.launch import start_ray
    from moesweep.sweep.space import data_shape

    console = console or Console(highlight=False, soft_wrap=True)
    results_dir = Path(results_dir)
    spec, acfg, jobs, manifest = plan_jobs(results_dir, what, samples, top)
    done = _ledger_done(results_dir)
    todo = [j for j in jobs if (j.trial_id, j.analysis, j.split, j.params_hash) not in done]
    console.print(f"analysis: {len(jobs)} tasks for {len(manifest['selection']['trial_ids'])} checkpoints "
                  f"({', '.join(acfg.what)}); {len(jobs) - len(todo)} already done")
    if not todo:
        return 0
    own_ray = address != "__connected__"
    if own_ray:
        start_ray(address, results_dir)
    try:
        cfg = spec.base_cfg
        data = load_data(cfg.data, "cpu")
        samples = {s: fixed_sample(getattr(data, f"{s}_x"), getattr(data, f"{s}_y"), acfg.samples)
                   for s in acfg.splits}
        samples_ref = ray.put({s: (x.numpy(), y.numpy()) for s, (x, y) in samples.items()})
        r = spec.analysis_resources
        remote = ray.remote(_execute).options(num_cpus=r.cpu, num_gpus=r.gpu, max_retries=1, retry_exceptions=True)
        channels, size, _ = data_shape(cfg)
        image_shape = (channels, size, size)
        pending = {remote.remote(j, samples_ref, acfg, image_shape): j for j in todo}
        return _collect(results_dir, spec.name, pending, len(todo), console)
    finally:
        if own_ray:
            ray.shutdown()


def _bar(done: int, total: int, width: int = 20) -> str:
    """An overall progress bar in every task line (works in logs and terminals alike)."""
    from rich.markup import escape

    fill = round(width * done / max(total, 1))
    return escape(f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total}")


def _collect(results_dir: Path, sweep: str, pending: dict, total: int, console) -> int:
    import ray

    failures, finished = 0, 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        finished += 1
        entry = {"sweep": sweep, "trial_id": job.trial_id, "analysis": job.analysis, "split": job.split,
                 "params_hash": job.params_hash, "attempts": 2}
        try:
            out = ray.get(ready[0])
        except Exception as e:  # retried once by Ray already: record and go on
            failures += 1
            msg = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
            upsert_table(results_dir, "tasks", [{**entry, "status": "failed", "error": msg}], LEDGER_GROUP)
            console.print(f"[red]✗[/] {_bar(finished, total)} {job.analysis} {job.split} {job.trial_id} ({job.head}): {msg}")
            continue
        for table, rows in out["rows"].items():
            upsert_table(results_dir, table, [{**r, "sweep": sweep} for r in rows], ROW_GROUPS[table])
        upsert_table(results_dir, "tasks", [{**entry, "attempts": None, "status": "done", "error": None,
                                             "seconds": out["seconds"], "node_id": out["node_id"]}], LEDGER_GROUP)
        console.print(f"[green]✓[/] {_bar(finished, total)} {job.analysis:<9} {job.split:<5} {job.trial_id} "
                      f"({job.head}) {out['seconds']:.1f}s")
    return 1 if failures else 0
