"""One analysis job = (checkpoint, analysis, split) -> table rows. Ray-free; ``sweep/tasks.py`` fans
these out as Ray tasks and writes the rows.

Also the selection rule (which checkpoints get analysed) and the parameter hash that keys every row,
so re-running skips finished work and changed parameters never mix with old rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from moesweep.results import SCHEMAS

ANALYSIS_VERSION = 2  # bump when an analysis' definition changes: old rows then no longer match


@dataclass(frozen=True)
class Job:
    trial_id: str
    config_id: str
    seed: int
    head: str
    analysis: str  # sharpness | landscape | latency
    split: str  # train | test | - (latency needs no data)
    checkpoint: str
    params_hash: str


SELECTION_RULE = ("best configuration per head kind by mean best_val_acc over its seeds (ties: more seeds, "
                  "then lower std), completed trials only; all seeds of a selected configuration are analysed")


def select_trials(trials: pd.DataFrame, top: int = 1) -> pd.DataFrame:
    """The ``top`` best configurations per head by mean best_val_acc over seeds; all their done seeds."""
    done = trials[(trials["status"] == "done") & trials["checkpoint"].notna()]
    if done.empty:
        return done
    g = done.groupby(["head", "config_id"])["best_val_acc"].agg(["mean", "count", "std"]).reset_index()
    g["std"] = g["std"].fillna(math.inf)  # one seed: no spread known, loses ties to measured spreads
    g = g.sort_values(["head", "mean", "count", "std"], ascending=[True, False, False, True])
    chosen = g.groupby("head").head(top)["config_id"]
    return done[done["config_id"].isin(set(chosen))].sort_values(["head", "config_id", "seed"])


def params_hash(analysis: str, split: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"v": ANALYSIS_VERSION, "analysis": analysis, "split": split, **params}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def job_params(acfg, analysis: str) -> dict[str, Any]:
    """The analysis settings that change its numbers (and so its rows' params_hash)."""
    a = asdict(acfg)
    keys = {"sharpness": ("samples", "param_sets", "top_eigs", "lanczos_iters", "probes", "slq_vectors"),
            "landscape": ("samples", "directions", "points", "radius", "gaussian_sigma", "probes"),
            "latency": ("latency_batch_sizes", "latency_repeats")}[analysis]
    return {k: (list(a[k]) if isinstance(a[k], tuple) else a[k]) for k in keys}


def make_jobs(selected: pd.DataFrame, acfg, what: list[str]) -> list[Job]:
    """One job per (checkpoint, analysis, split); latency once per configuration (same architecture)."""
    jobs = []
    for analysis in what:
        splits = ["-"] if analysis == "latency" else list(acfg.splits)
        params = job_params(acfg, analysis)
        rows = selected.groupby("config_id").head(1) if analysis == "latency" else selected
        for _, t in rows.iterrows():
            for split in splits:
                jobs.append(Job(t["trial_id"], t["config_id"], int(t["seed"]), t["head"], analysis, split,
                                t["checkpoint"], params_hash(analysis, split, params)))
    return jobs


def _only(name: str, row: dict[str, Any]) -> dict[str, Any]:
    cols = set(SCHEMAS[name].names)
    return {k: v for k, v in row.items() if k in cols}


def run_job(job: Job, model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]] | None,
            acfg, image_shape: tuple[int, int, int], device: torch.device, threads: int) -> dict[str, list[dict]]:
    """Run one job on an eval-mode model; returns rows per table (keys added, schema columns only)."""
    from moesweep.analysis.hessian import compute_sharpness
    from moesweep.analysis.landscape import compute_landscape
    from moesweep.analysis.latency import Timing, measure_latency

    key = {"trial_id": job.trial_id, "config_id": job.config_id, "seed": job.seed, "head": job.head,
           "params_hash": job.params_hash}
    out: dict[str, list[dict]] = {}
    if job.analysis == "sharpness":
        out["sharpness"], out["spectrum"] = [], []
        for ps in acfg.param_sets:
            rec, spec = compute_sharpness(model, batches, param_set=ps, top_n=acfg.top_eigs,
                                          n_probes=acfg.probes, lanczos_iters=acfg.lanczos_iters,
                                          slq_vectors=acfg.slq_vectors, seed=0)
            out["sharpness"].append(_only("sharpness", {**rec, **key, "split": job.split}))
            out["spectrum"].append(_only("spectrum", {**spec, **key, "split": job.split}))
    elif job.analysis == "landscape":
        n = acfg.points
        grid = [acfg.radius * (2 * i / (n - 1) - 1) for i in range(n)]
        # The small-alpha curvature (compared with lambda_max) is fitted on 5 extra points within
        # 2% of the radius: at the grid's own spacing the curves are far from quadratic.
        fine = [acfg.radius * f for f in (-0.02, -0.01, 0.01, 0.02)]
        alphas = sorted(set(grid) | set(fine))
        fit_radius = acfg.radius * 0.0201
        recs, check = compute_landscape(model, batches, "all", alphas=alphas, n_random=acfg.directions,
                                        sigma=acfg.gaussian_sigma, n_probes=acfg.probes, fit_radius=fit_radius,
                                        seed=0)
        out["landscape"] = [_only("landscape", {**r, **key, "split": job.split}) for r in recs]
        out["landscape_checks"] = [
            {**key, "split": job.split, "check": "eigvec_curvature_vs_lambda_max",
             "measured": check["eigvec_curvature"], "predicted": check["lambda_max"]},
            {**key, "split": job.split, "check": "gaussian_rise_vs_half_sigma2_trace",
             "measured": check["gaussian_mean_increase"], "predicted": check["gaussian_predicted"]},
        ]
    elif job.analysis == "latency":
        timing = Timing(min_repeats=acfg.latency_repeats, max_repeats=max(acfg.latency_repeats * 10, 50))
        recs = measure_latency(model, image_shape, acfg.latency_batch_sizes, device=device, threads=threads,
                               timing=timing, head_name=job.head)
        out["latency"] = [_only("latency", {**r, **key}) for r in recs]
    else:  # pragma: no cover - guarded by AnalysisCfg validation
        raise ValueError(f"unknown analysis {job.analysis!r}")
    return out


def fixed_sample(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed analysis sample: the same ``n`` indices (a seeded permutation) for every model."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[: min(n, len(y))].sort().values
    return x[idx], y[idx]


def batched(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


__all__ = ["Job", "SELECTION_RULE", "select_trials", "make_jobs", "run_job", "fixed_sample", "batched", "params_hash"]
