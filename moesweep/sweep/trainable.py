"""The Ray Tune trainable: one Tune trial = one configuration, all its seeds trained in lockstep.

Why seeds inside one trial: ASHA promotes/stops and Optuna learns from the *mean over seeds* of a
configuration at each epoch, so a lucky seed can neither rescue a bad configuration nor get a good one
stopped; and a configuration's seeds always see identical values. The cost is that a configuration's
seeds share its CPUs/GPU share; parallelism comes from running many configurations at once.

Each moesweep trial (a configuration x seed) keeps its own ``TrialRunner``, checkpoint sub-directory
(``seed_<s>/state.pt``) and history; the reported metric is the mean over seeds.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from moesweep.sweep.space import config_id, trial_cfg, trial_id
from moesweep.sweep.spec import SweepSpec

HISTORY_FILE = "history.json"


def data_to_arrays(data) -> dict[str, Any]:
    """A ``Data`` as numpy arrays + metadata, put in the object store once per sweep (read once per node)."""
    out: dict[str, Any] = {"meta": {k: getattr(data, k) for k in ("num_classes", "in_channels", "image_size", "name")}}
    out["meta"]["class_names"] = list(getattr(data, "class_names", []) or [])
    out["mean"], out["std"] = data.mean.cpu().numpy(), data.std.cpu().numpy()
    for split in ("train", "val", "test"):
        out[f"{split}_x"] = getattr(data, f"{split}_x").cpu().numpy()
        out[f"{split}_y"] = getattr(data, f"{split}_y").cpu().numpy()
    return out


def arrays_to_data(arrays: dict[str, Any], device: torch.device):
    """Back to a ``Data`` on ``device``; on CPU the object-store buffers are used without a copy."""
    from moesweep.data import Data

    with warnings.catch_warnings():  # object-store arrays are read-only; we never write into them
        warnings.simplefilter("ignore", UserWarning)
        tensors = {k: torch.from_numpy(v).to(device) for k, v in arrays.items() if isinstance(v, np.ndarray)}
    return Data(**tensors, **arrays["meta"])


def _device() -> torch.device:
    import ray

    return torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def _threads() -> int:
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(math.floor(cpus)))


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _maybe_inject_fault(spec: SweepSpec, cid: str, epoch: int) -> None:
    """Tests only: raise once at a given epoch (a marker file makes it once per configuration)."""
    fi = spec.fault_injection
    if not fi or fi.get("fail_once_at_epoch") != epoch:
        return
    marker = Path(fi["marker_dir"]) / f"{cid}.failed"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("injected")
        raise RuntimeError(f"injected fault at epoch {epoch}")


def run_configuration(config: dict[str, Any], data: dict[str, Any], spec: SweepSpec) -> None:
    """Tune function trainable. ``config["point"]`` (grid/random) or ``config`` itself (optuna) holds the
    dotted overrides of this configuration."""
    import time

    import ray

    from moesweep.train import NonFiniteLossError, TrialRunner

    started_at = time.time()  # for the start-overhead benchmark: gap between trials on one actor
    point = dict(config.get("point", config))
    threads = _threads()
    torch.set_num_threads(threads)
    device = _device()
    d = arrays_to_data(data, device)
    cid = config_id(spec, point)
    node_id = ray.get_runtime_context().get_node_id()
    ckpt = tune.get_checkpoint()
    runners: dict[int, TrialRunner] = {}
    if ckpt is not None:
        with ckpt.as_directory() as cdir:
            for s in spec.seeds:
                runners[s] = TrialRunner(trial_cfg(spec, point, s), d, resume=Path(cdir) / f"seed_{s}")
    else:
        runners = {s: TrialRunner(trial_cfg(spec, point, s), d) for s in spec.seeds}
    any_runner = next(iter(runners.values()))
    base = {"config_id": cid, "node_id": node_id, "threads": threads, "device": str(device),
            "started_at": started_at, "setup_s": time.time() - started_at}

    while not any_runner.done:
        epoch = any_runner.epoch
        per_seed: dict[str, dict[str, Any]] = {}
        try:
            for s, r in runners.items():
                per_seed[str(s)] = r.run_epoch()
        except NonFiniteLossError as e:
            # A final failure: retrying would diverge again. End the trial with the reason recorded.
            failed = {str(s): {"status": "failed", "error": str(e), "trial_id": trial_id(cid, s)} for s in runners}
            tune.report({**base, "epoch": epoch, "trial_status": "failed", "error": str(e),
                         "val_acc": float("nan"), "best_val_acc": float("nan"), "final": failed})
            return
        _maybe_inject_fault(spec, cid, epoch)
        metrics: dict[str, Any] = {**base, "epoch": epoch, "trial_status": "running", "seeds": per_seed}
        for key in ("val_acc", "val_loss", "train_acc", "train_loss", "best_val_acc"):
            metrics[key] = _mean([m[key] for m in per_seed.values()])
        if any_runner.done:
            finals = {}
            for s, r in runners.items():
                res = r.finish()
                finals[str(s)] = {k: v for k, v in res.__dict__.items() if k not in ("history", "checkpoint")}
                finals[str(s)]["trial_id"] = trial_id(cid, s)
            metrics["final"] = finals
            metrics["trial_status"] = "done"
        with tempfile.TemporaryDirectory(prefix="moesweep-ckpt-") as tmp:
            for s, r in runners.items():
                sub = Path(tmp) / f"seed_{s}"
                r.save(sub)
                (sub / HISTORY_FILE).write_text(json.dumps(r.history, default=float))
            metrics["reported_at"] = time.time()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
