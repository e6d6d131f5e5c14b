"""Turn Tune results into moesweep's Parquet rows (trials, epochs, experts, expert_class, configs).

The authoritative per-epoch history of each (configuration, seed) lives in its checkpoint
(``seed_<s>/history.json``), so the tables can always be rebuilt from the sweep's storage without
duplicates; the live callback writes the same rows incrementally while trials run.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs

from moesweep.config import to_dict
from moesweep.results import EPOCHS
from moesweep.stats import mean_ci
from moesweep.sweep.space import config_id, data_shape, trial_cfg, trial_id
from moesweep.sweep.spec import SweepSpec


def checkpoint_location(fs: pafs.FileSystem | None, path: str) -> str:
    """A path any node can open: plain for local storage, ``scheme://path`` for remote filesystems."""
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = {"S3FileSystem": "s3", "GcsFileSystem": "gs", "HadoopFileSystem": "hdfs"}.get(type(fs).__name__)
    return f"{scheme}://{path}" if scheme else path


def read_history(fs: pafs.FileSystem | None, ckpt_path: str, seed: int) -> list[dict[str, Any]] | None:
    fs = fs or pafs.LocalFileSystem()
    try:
        with fs.open_input_stream(f"{ckpt_path}/seed_{seed}/history.json") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


@lru_cache(maxsize=256)
def _model_sizes(cfg_json: str) -> tuple[int, int, int]:
    """(params, head_params, active_head_macs) for a trial that ended before reporting them."""
    import torch

    from moesweep.config import TrialCfg, from_dict
    from moesweep.models import build_model, count_params

    cfg = from_dict(TrialCfg, json.loads(cfg_json))
    with torch.random.fork_rng():
        m = build_model(cfg, *data_shape(cfg))
    return count_params(m), count_params(m.head), int(m.head.active_macs())


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _key(sweep: str, tid: str, cid: str, seed: int, head: str) -> dict[str, Any]:
    return {"sweep": sweep, "trial_id": tid, "config_id": cid, "seed": seed, "head": head}


def epoch_rows(key: dict[str, Any], history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Per-epoch scalars -> epochs rows; per-expert load/importance vectors -> experts rows."""
    cols = set(EPOCHS.names)
    epochs, experts = [], []
    for m in history:
        epochs.append({**key, **{k: v for k, v in m.items() if k in cols and k not in key}})
        for split in ("train", "val"):
            load, imp = m.get(f"{split}_load"), m.get(f"{split}_importance")
            if load is None:
                continue
            for e, ld in enumerate(load):
                experts.append({**key, "epoch": m["epoch"], "split": split, "expert": e, "load": float(ld),
                                "importance": float(imp[e]) if imp is not None else None})
    return epochs, experts


def expert_class_rows(key: dict[str, Any], history: list[dict[str, Any]]) -> list[dict]:
    if not history or history[-1].get("val_expert_class") is None:
        return []
    mat = history[-1]["val_expert_class"]
    return [{**key, "split": "val", "expert": e, "label": c, "count": int(n)}
            for e, row in enumerate(mat) for c, n in enumerate(row)]


def rows_for_configuration(spec: SweepSpec, sweep: str, point: dict[str, Any], metrics: dict[str, Any] | None,
                           status: str, error: str | None, fs: pafs.FileSystem | None,
                           ckpt_path: str | None) -> dict[str, list[dict]]:
    """All table rows of one Tune trial (one configuration, every seed).

    ``status`` is the Tune-level outcome: running | done | stopped | error | pending."""
    metrics = metrics or {}
    cid = config_id(spec, point)
    out: dict[str, list[dict]] = {"trials": [], "epochs": [], "experts": [], "expert_class": []}
    finals = metrics.get("final") or {}
    for s in spec.seeds:
        cfg = trial_cfg(spec, point, s)
        tid = trial_id(cid, s)
        key = _key(sweep, tid, cid, s, cfg.head.kind)
        history = read_history(fs, ckpt_path, s) if ckpt_path else None
        if history is None:
            last = (metrics.get("seeds") or {}).get(str(s))
            history = [last] if last else []
        final = finals.get(str(s)) or {}
        st, err = status, error
        if final.get("status") == "failed":
            st, err = "failed", final.get("error")
        elif status == "done" and not final:
            st = "stopped"  # ended by the scheduler before its last epoch
        elif status == "done" and final.get("status") not in (None, "done"):
            st = final["status"]
        cfg_d = to_dict(cfg)
        cfg_d.pop("seed")
        cfg_json = json.dumps(cfg_d, sort_keys=True)
        params, head_params, macs = (final["params"], final["head_params"], final["active_head_macs"]) \
            if "params" in final else _model_sizes(json.dumps(to_dict(cfg), sort_keys=True))
        best = max(history, key=lambda m: m["val_acc"]) if history else {}
        h = cfg.head
        out["trials"].append({
            **key, "num_experts": h.num_experts if h.kind != "dense" else None,
            "top_k": h.top_k if h.kind == "sparse" else None, "balance_loss": h.balance_loss if h.kind != "dense" else None,
            "balance_weight": h.balance_weight if h.kind != "dense" else None, "expert_hidden": str(h.expert_hidden),
            "dispatch": h.dispatch if h.kind == "sparse" else None, "backbone": cfg.backbone.name,
            "dataset": cfg.data.name, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr, "optimizer": cfg.train.optimizer, "schedule": cfg.train.schedule,
            "weight_decay": cfg.train.weight_decay, "config_json": cfg_json, "status": st, "error": err,
            "epochs_done": len(history), "best_epoch": best.get("epoch"), "best_val_acc": _num(best.get("val_acc")),
            "final_val_acc": _num(history[-1]["val_acc"]) if history else None,
            "test_acc": _num(final.get("test_acc")), "train_acc": _num(history[-1]["train_acc"]) if history else None,
            "params": params, "head_params": head_params, "active_head_macs": macs,
            "wall_s": _num(final.get("wall_s")), "node_id": metrics.get("node_id"),
            "checkpoint": f"{checkpoint_location(fs, ckpt_path)}/seed_{s}" if ckpt_path else None,
        })
        e_rows, x_rows = epoch_rows(key, history)
        out["epochs"] += e_rows
        out["experts"] += x_rows
        out["expert_class"] += expert_class_rows(key, history)
    return out


def config_rows(trials: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: seed statistics (t-interval 95% CI) of best val and test accuracy."""
    last_entropy: dict[str, float] = {}
    for e in sorted(epochs, key=lambda r: r["epoch"]):
        if e.get("val_route_entropy") is not None:
            last_entropy[e["trial_id"]] = e["val_route_entropy"]
    by_cfg: dict[str, list[dict]] = {}
    for t in trials:
        by_cfg.setdefault(t["config_id"], []).append(t)
    rows = []
    for cid, ts in by_cfg.items():
        t0 = ts[0]
        row = {"sweep": t0["sweep"], "config_id": cid, "head": t0["head"], "num_experts": t0["num_experts"],
               "top_k": t0["top_k"], "balance_loss": t0["balance_loss"], "balance_weight": t0["balance_weight"],
               "config_json": t0["config_json"], "n_seeds": len(ts),
               "n_done": sum(t["status"] == "done" for t in ts)}
        for col in ("best_val_acc", "test_acc"):
            vals = [t[col] for t in ts if t[col] is not None]
            m, sd, lo, hi = mean_ci(vals) if vals else (None, None, None, None)
            row.update({f"{col}_mean": m, f"{col}_std": sd, f"{col}_ci_low": lo, f"{col}_ci_high": hi})
        ents = [last_entropy[t["trial_id"]] for t in ts if t["trial_id"] in last_entropy]
        row["route_entropy_mean"] = sum(ents) / len(ents) if ents else None
        rows.append(row)
    return rows


__all__ = ["rows_for_configuration", "config_rows", "epoch_rows", "read_history"]
