"""Tidy "info" frames for the report, from the trials and epochs tables: pure functions, tested on their own.

Every function takes the DataFrames that ``moesweep.results.read_table`` returns and gives back a small
frame the figures and tables draw directly; an empty input gives an empty frame with the same columns,
so a section can say "not run" instead of failing. Accuracies stay fractions here (the page formats).

Statistics follow one rule: a configuration's seeds are its sample; only completed trials count (a
crashed seed is reported in the overview, never averaged in as a zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesweep import results
from moesweep.stats import bootstrap_diff_ci, mean_ci, welch_t

# Trial statuses that mean "trained to the end" (train_trial returns "done").
DONE = frozenset({"done", "completed"})
HEAD_ORDER = ("dense", "soft", "sparse")
HPARAMS = ("num_experts", "top_k", "balance_weight")
HPARAM_NAMES = {"num_experts": "experts E", "top_k": "top-k", "balance_weight": "balance weight"}
ALPHA = 0.05  # significance level used in the page's wording


@dataclass
class Results:
    """Everything the report reads: the manifest and every table (empty frames for missing files)."""

    dir: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def load_results(results_dir: str | Path) -> Results:
    d = Path(results_dir)
    manifest = results.read_json(d / "manifest.json") or {}
    return Results(d, manifest if isinstance(manifest, dict) else {},
                   {name: results.read_table(d, name) for name in results.SCHEMAS})


def head_order(heads: Any) -> list[str]:
    """Known heads in their natural order (dense, soft, sparse), any others after them alphabetically."""
    present = {str(h) for h in heads}
    return [h for h in HEAD_ORDER if h in present] + sorted(present - set(HEAD_ORDER))


def sort_heads(df: pd.DataFrame, *extra: str) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    rank = {h: i for i, h in enumerate(head_order(df["head"].unique()))}
    return df.assign(_r=df["head"].map(rank)).sort_values(["_r", *extra]).drop(columns="_r").reset_index(drop=True)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"].astype(str).str.lower().isin(DONE)]


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per status (columns status, n), most frequent first."""
    if trials.empty:
        return pd.DataFrame({"status": pd.Series(dtype=str), "n": pd.Series(dtype=int)})
    s = trials["status"].fillna("unknown").astype(str).value_counts()
    return pd.DataFrame({"status": s.index, "n": s.values.astype(int)})


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.number)) and not pd.isna(v) else str(v)


def config_label(head: str, num_experts: Any, top_k: Any, balance_weight: Any) -> str:
    """Short human name of a configuration: 'sparse E=8 k=2 w=0.01' (dense: just 'dense')."""
    parts = [str(head)]
    if str(head) != "dense":
        for key, v in (("E", num_experts), ("k", top_k), ("w", balance_weight)):
            if not pd.isna(v):
                parts.append(f"{key}={_num(v)}")
    return " ".join(parts)


CONFIG_COLS = ["head", "config_id", "label", "num_experts", "top_k", "balance_weight", "balance_loss",
               "n", "val_mean", "val_std", "val_lo", "val_hi", "test_mean", "test_std", "test_lo", "test_hi"]


def config_stats(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: mean, std and 95% t-interval over completed seeds of best_val_acc
    (``val_*``) and test_acc (``test_*``); ``n`` is the number of completed seeds."""
    done = completed(trials)
    rows = []
    for (head, cid), g in done.groupby(["head", "config_id"], sort=False):
        first = g.iloc[0]
        row = {"head": head, "config_id": cid, "n": len(g),
               **{h: first[h] for h in HPARAMS}, "balance_loss": first["balance_loss"]}
        for prefix, col in (("val", "best_val_acc"), ("test", "test_acc")):
            row.update(zip([f"{prefix}_{s}" for s in ("mean", "std", "lo", "hi")], mean_ci(g[col])))
        row["label"] = config_label(head, first["num_experts"], first["top_k"], first["balance_weight"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=CONFIG_COLS)
    # Configurations that differ only in columns outside the label (lr, ...) must still be told apart.
    dup = out.duplicated(["label"], keep=False)
    out.loc[dup, "label"] = out.loc[dup, "label"] + " (" + out.loc[dup, "config_id"].astype(str) + ")"
    return sort_heads(out, "config_id")


def best_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """The best configuration per head: highest mean best_val_acc over seeds among completed trials;
    ties go to more seeds, then to the lower std (a single seed, std NaN, loses a tie)."""
    stats = config_stats(trials)
    if stats.empty:
        return stats
    # Means equal up to float noise (0.79, 0.81 vs 0.78, 0.80, 0.82) are a tie, not a win.
    ranked = stats.assign(_m=stats["val_mean"].round(9)).sort_values(
        ["_m", "n", "val_std"], ascending=[False, False, True], na_position="last")
    return sort_heads(ranked.drop_duplicates("head", keep="first").drop(columns="_m"))


def seed_points(trials: pd.DataFrame, config_ids: Any) -> pd.DataFrame:
    """Completed trials of the given configurations (one row per seed), for the dots beside each mean."""
    done = completed(trials)
    return sort_heads(done[done["config_id"].isin(list(config_ids))], "config_id", "seed")


COMPARE_COLS = ["head", "config_id", "label", "metric", "n", "n_base", "mean", "base_mean", "diff", "lo", "hi",
                "t", "df", "p", "significant"]


def compare_to_baseline(trials: pd.DataFrame, metric: str = "test_acc", baseline: str = "dense",
                        n_boot: int = 10000) -> pd.DataFrame:
    """Each non-baseline head's best configuration against the baseline head's best, on ``metric``:
    difference of means (``diff``, fraction), bootstrap 95% CI (``lo``, ``hi``), Welch's t-test
    (``t``, ``df``, ``p``) and ``significant`` (p < 0.05; None when the test is undefined)."""
    best = best_configs(trials)
    if best.empty or baseline not in set(best["head"]):
        return pd.DataFrame(columns=COMPARE_COLS)
    done = completed(trials)
    base = best[best["head"] == baseline].iloc[0]
    b = done.loc[done["config_id"] == base["config_id"], metric].dropna().to_numpy()
    rows = []
    for _, r in best[best["head"] != baseline].iterrows():
        a = done.loc[done["config_id"] == r["config_id"], metric].dropna().to_numpy()
        diff, lo, hi = bootstrap_diff_ci(a, b, n_boot=n_boot)
        t, df, p = welch_t(a, b)
        rows.append({"head": r["head"], "config_id": r["config_id"], "label": r["label"], "metric": metric,
                     "n": len(a), "n_base": len(b), "mean": a.mean() if len(a) else np.nan,
                     "base_mean": b.mean() if len(b) else np.nan, "diff": diff, "lo": lo, "hi": hi,
                     "t": t, "df": df, "p": p, "significant": None if np.isnan(p) else bool(p < ALPHA)})
    return pd.DataFrame(rows, columns=COMPARE_COLS)


def hparam_points(trials: pd.DataFrame) -> pd.DataFrame:
    """Long frame of completed MoE trials: one row per (trial, hyperparameter) with its value and
    accuracies; the dense head has no experts, so it is left out (it is the reference line)."""
    done = completed(trials)
    done = done[done["head"] != "dense"]
    cols = ["head", "config_id", "seed", "param", "value", "best_val_acc", "test_acc"]
    if done.empty:
        return pd.DataFrame(columns=cols)
    long = done.melt(id_vars=["head", "config_id", "seed", "best_val_acc", "test_acc"], value_vars=list(HPARAMS),
                     var_name="param", value_name="value").dropna(subset=["value"])
    return sort_heads(long[cols], "param", "value")


def hparam_effects(trials: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Mean and 95% CI of ``metric`` over all completed trials sharing a hyperparameter value, per head
    (the other hyperparameters are pooled: a marginal effect, not a controlled one)."""
    pts = hparam_points(trials)
    rows = []
    for (head, param, value), g in pts.groupby(["head", "param", "value"], sort=False):
        m, s, lo, hi = mean_ci(g[metric])
        rows.append({"head": head, "param": param, "value": value, "n": int(g[metric].notna().sum()),
                     "n_configs": g["config_id"].nunique(), "mean": m, "std": s, "lo": lo, "hi": hi})
    out = pd.DataFrame(rows, columns=["head", "param", "value", "n", "n_configs", "mean", "std", "lo", "hi"])
    return sort_heads(out, "param", "value")


BAND_COLS = ["head", "config_id", "metric", "epoch", "n", "mean", "lo", "hi"]


def epoch_curves(epochs: pd.DataFrame, best: pd.DataFrame, metrics: tuple[str, ...] = ("val_acc", "val_loss"),
                 ) -> pd.DataFrame:
    """Per-epoch curves of the best configurations: mean over seeds and a min–max band (``lo``, ``hi``);
    ``n`` counts the seeds with a value at that epoch. Metrics absent or all-NaN for a head are skipped."""
    if epochs.empty or best.empty:
        return pd.DataFrame(columns=BAND_COLS)
    sub = epochs[epochs["config_id"].isin(best["config_id"])]
    frames = []
    for metric in metrics:
        if metric not in sub:
            continue
        g = sub.dropna(subset=[metric]).groupby(["head", "config_id", "epoch"])[metric]
        agg = g.agg(n="count", mean="mean", lo="min", hi="max").reset_index()
        frames.append(agg.assign(metric=metric))
    if not frames:
        return pd.DataFrame(columns=BAND_COLS)
    return sort_heads(pd.concat(frames, ignore_index=True)[BAND_COLS], "metric", "epoch")


def final_epoch(epochs: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last logged epoch (one row per trial)."""
    if epochs.empty:
        return epochs
    return epochs.sort_values("epoch").groupby("trial_id", as_index=False).tail(1)


def wall_time_s(manifest: dict[str, Any]) -> float | None:
    """Sweep wall time from the manifest's start/end times; None when either is missing or unparsable."""
    try:
        start, end = pd.Timestamp(manifest["start_time"]), pd.Timestamp(manifest["end_time"])
        return float((end - start).total_seconds())
    except (KeyError, TypeError, ValueError):
        return None
