"""Tidy "info" frames for the analysis sections: expert utilization, sharpness, loss surface, latency.

Same conventions as ``info.py``: pure functions of the Parquet tables, empty in -> empty out (with the
columns), bands are min–max over seeds/directions, intervals are 95% t-intervals over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moesweep.report.info import completed, config_stats, final_epoch, sort_heads
from moesweep.report.text import head_name
from moesweep.stats import mean_ci


def _empty(cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=cols)


LOAD_COLS = ["head", "config_id", "num_experts", "epoch", "expert", "n", "rel_load"]


def expert_load(experts: pd.DataFrame, best: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """Per-expert load of the best configurations over epochs, relative to uniform (1 = balanced).

    Each (trial, epoch) is normalized to shares first, so the result reads the same whether a trial
    logged fractions or counts; ``rel_load = share · E`` is then averaged over seeds. Falls back to the
    train split when ``split`` was not logged."""
    sub = experts[experts["config_id"].isin(best["config_id"])] if not best.empty else experts.iloc[:0]
    if split not in set(sub["split"]):
        split = "train"
    sub = sub[sub["split"] == split].dropna(subset=["load"])
    if sub.empty:
        return _empty(LOAD_COLS)
    tot = sub.groupby(["trial_id", "epoch"])["load"].transform("sum")
    e = sub.groupby(["trial_id", "epoch"])["expert"].transform("count")
    sub = sub.assign(rel_load=sub["load"] / tot.replace(0, np.nan) * e, num_experts=e)
    out = (sub.groupby(["head", "config_id", "num_experts", "epoch", "expert"])["rel_load"]
           .agg(n="count", rel_load="mean").reset_index())
    return sort_heads(out[LOAD_COLS], "epoch", "expert")


CLASS_COLS = ["head", "config_id", "expert", "label", "count", "share"]


def expert_class_share(expert_class: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Expert × class routing of the best configurations, counts summed over seeds; ``share`` is the
    fraction of a class's samples whose top-1 expert is ``expert`` (each class column sums to 1)."""
    if expert_class.empty or best.empty:
        return _empty(CLASS_COLS)
    sub = expert_class[expert_class["config_id"].isin(best["config_id"])]
    out = sub.groupby(["head", "config_id", "expert", "label"])["count"].sum().reset_index()
    tot = out.groupby(["head", "config_id", "label"])["count"].transform("sum")
    out["share"] = out["count"] / tot.replace(0, np.nan)
    return sort_heads(out[CLASS_COLS], "label", "expert")


DEAD_COLS = ["head", "config_id", "label", "seed", "num_experts", "dead"]


def dead_experts(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Dead experts (validation split, else training) at each completed MoE trial's last epoch."""
    last = final_epoch(epochs)
    done = completed(trials)
    if last.empty or done.empty:
        return _empty(DEAD_COLS)
    last = last[last["trial_id"].isin(done["trial_id"]) & (last["head"] != "dense")]
    dead = last["val_dead_experts"].fillna(last["train_dead_experts"])
    out = last.assign(dead=dead).dropna(subset=["dead"])
    labels = config_stats(trials).set_index("config_id")[["label", "num_experts"]]
    out = out.join(labels, on="config_id")
    return sort_heads(out[DEAD_COLS], "num_experts", "config_id", "seed")


SHARP_COLS = ["head", "split", "param_set", "loss", "n", "lambda_mean", "lambda_lo", "lambda_hi",
              "trace_mean", "trace_lo", "trace_hi", "lambda_resid", "trace_stderr"]


def sharpness_info(sharpness: pd.DataFrame) -> pd.DataFrame:
    """λmax and Hessian trace per head and split: mean and 95% CI over seeds, plus the median estimator
    error (``lambda_resid``: eigen-residual ‖Hv − λv‖; ``trace_stderr``: Hutchinson standard error)."""
    if sharpness.empty:
        return _empty(SHARP_COLS)
    rows = []
    for (head, split, ps, loss), g in sharpness.groupby(["head", "split", "param_set", "loss"], dropna=False):
        lam, tr = mean_ci(g["lambda_max"]), mean_ci(g["trace"])
        rows.append({"head": head, "split": split, "param_set": ps, "loss": loss,
                     "n": int(g["lambda_max"].notna().sum()),
                     "lambda_mean": lam[0], "lambda_lo": lam[2], "lambda_hi": lam[3],
                     "trace_mean": tr[0], "trace_lo": tr[2], "trace_hi": tr[3],
                     "lambda_resid": g["lambda_max_residual"].median(), "trace_stderr": g["trace_stderr"].median()})
    return sort_heads(pd.DataFrame(rows, columns=SHARP_COLS), "param_set", "split")


SPEC_COLS = ["head", "trial_id", "seed", "split", "param_set", "x", "density"]


def spectrum_lines(spectrum: pd.DataFrame) -> pd.DataFrame:
    """Spectral densities as long rows (one per grid point); mismatched grid/density lists are dropped."""
    rows = []
    for r in spectrum.itertuples(index=False):
        grid, dens = np.asarray(r.grid, dtype=float), np.asarray(r.density, dtype=float)
        if grid.ndim != 1 or grid.shape != dens.shape or grid.size == 0:
            continue
        rows.append(pd.DataFrame({"head": r.head, "trial_id": r.trial_id, "seed": r.seed, "split": r.split,
                                  "param_set": r.param_set, "x": grid, "density": dens}))
    return sort_heads(pd.concat(rows, ignore_index=True), "trial_id", "x") if rows else _empty(SPEC_COLS)


LAND_COLS = ["head", "split", "direction_kind", "alpha", "n", "loss_mean", "loss_lo", "loss_hi", "acc_mean",
             "flip_mean", "flip_lo", "flip_hi"]


def landscape_info(landscape: pd.DataFrame) -> pd.DataFrame:
    """Loss along each direction kind per head: mean over (seed, direction) curves with a min–max band;
    ``n`` counts curves. Routing flip rate likewise (NaN for the dense head, which has no router)."""
    if landscape.empty:
        return _empty(LAND_COLS)
    g = landscape.groupby(["head", "split", "direction_kind", "alpha"])
    out = g.agg(n=("loss", "count"), loss_mean=("loss", "mean"), loss_lo=("loss", "min"), loss_hi=("loss", "max"),
                acc_mean=("accuracy", "mean"), flip_mean=("routing_flip_rate", "mean"),
                flip_lo=("routing_flip_rate", "min"), flip_hi=("routing_flip_rate", "max")).reset_index()
    return sort_heads(out[LAND_COLS], "split", "direction_kind", "alpha")


def landscape_checks_info(checks: pd.DataFrame) -> pd.DataFrame:
    """Consistency checks per head/split/check: mean measured and predicted over seeds, and their ratio."""
    cols = ["head", "split", "check", "n", "measured", "predicted", "ratio"]
    if checks.empty:
        return _empty(cols)
    out = checks.groupby(["head", "split", "check"]).agg(n=("measured", "count"), measured=("measured", "mean"),
                                                         predicted=("predicted", "mean")).reset_index()
    out["ratio"] = out["measured"] / out["predicted"].replace(0, np.nan)
    return sort_heads(out[cols], "check", "split")


LAT_COLS = ["head", "dispatch", "series", "device", "scope", "threads", "batch_size", "n", "median_ms", "p10_ms",
            "p90_ms", "images_per_s", "active_flops", "flops"]


def latency_info(latency: pd.DataFrame) -> pd.DataFrame:
    """Latency per head, dispatch, device, scope and batch size: the median over trials of each recorded
    statistic. ``series`` labels a line: the head's display name, plus the dispatch when it was timed with
    several."""
    if latency.empty:
        return _empty(LAT_COLS)
    lat = latency.assign(dispatch=latency["dispatch"].fillna("-"), threads=latency["threads"].fillna(-1))
    keys = ["head", "dispatch", "device", "scope", "threads", "batch_size"]
    out = lat.groupby(keys).agg(n=("median_ms", "count"), median_ms=("median_ms", "median"),
                                p10_ms=("p10_ms", "median"), p90_ms=("p90_ms", "median"),
                                images_per_s=("images_per_s", "median"), active_flops=("active_flops", "median"),
                                flops=("flops", "median")).reset_index()
    multi = out.groupby("head")["dispatch"].transform("nunique") > 1
    names = out["head"].map(head_name)  # a display label: "SparseMoE · batched"
    out["series"] = np.where(multi, names + " · " + out["dispatch"].astype(str), names)
    return sort_heads(out[LAT_COLS], "dispatch", "device", "scope", "batch_size")


SPEED_COLS = ["device", "scope", "threads", "dispatch", "batch_size", "n", "soft_ms", "sparse_ms", "speedup"]


def sparse_speedup(latency: pd.DataFrame) -> pd.DataFrame:
    """Soft-over-sparse time ratio (``speedup`` > 1: the sparse head is faster) per sparse dispatch, at
    each batch size timed for both heads on the same device, scope and thread count (``n``: sparse trials)."""
    info = latency_info(latency)
    soft = info[info["head"] == "soft"].groupby(["device", "scope", "threads", "batch_size"])["median_ms"].median()
    sparse = info[info["head"] == "sparse"]
    if soft.empty or sparse.empty:
        return _empty(SPEED_COLS)
    out = sparse.join(soft.rename("soft_ms"), on=["device", "scope", "threads", "batch_size"], how="inner")
    out = out.rename(columns={"median_ms": "sparse_ms"})
    out["speedup"] = out["soft_ms"] / out["sparse_ms"]
    return out[SPEED_COLS].sort_values(["device", "scope", "dispatch", "batch_size"]).reset_index(drop=True)
