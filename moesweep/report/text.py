"""Number formatting and the generated findings: plain sentences that carry their numbers and seed counts.

Undefined numbers (NaN, None) print as "n/a" and a missing interval is said, never shown as ± 0.
Accuracies are fractions in the tables and percentages (differences: percentage points) in text.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd

from moesweep.report.info import ALPHA, status_counts

HEAD_NAMES = {"dense": "Dense", "soft": "SoftMoE", "sparse": "SparseMoE"}
MINUS = "\u2212"  # a real minus sign reads better than a hyphen next to numbers


def isnum(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and not pd.isna(x)


def head_name(head: str) -> str:
    return HEAD_NAMES.get(str(head), str(head))


def fmt_num(x: Any, digits: int = 1, signed: bool = False) -> str:
    if not isnum(x):
        return "n/a"
    s = f"{float(x):+.{digits}f}" if signed else f"{float(x):.{digits}f}"
    return s.replace("-", MINUS)


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage: 0.8743 -> '87.4%'."""
    return fmt_num(100 * x, digits) + "%" if isnum(x) else "n/a"


def fmt_mean_ci(mean: Any, lo: Any, hi: Any, scale: float = 100.0, unit: str = "%", digits: int = 1) -> str:
    """'87.4 ± 0.3%' (± the 95% CI half-width), or '87.4% (CI n/a)' when the interval is undefined."""
    if not isnum(mean):
        return "n/a"
    m = fmt_num(scale * mean, digits)
    if not (isnum(lo) and isnum(hi)):
        return f"{m}{unit} (CI n/a)"
    return f"{m} ± {fmt_num(scale * (hi - lo) / 2, digits)}{unit}"


def fmt_interval(lo: Any, hi: Any, scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
    if not (isnum(lo) and isnum(hi)):
        return "n/a"
    return f"[{fmt_num(scale * lo, digits, signed)}, {fmt_num(scale * hi, digits, signed)}]"


def fmt_sig(digits: int) -> Callable[[Any], str]:
    """A formatter to ``digits`` significant figures ('n/a' for missing), for table columns."""
    return lambda x: f"{float(x):.{digits}g}".replace("-", MINUS) if isnum(x) else "n/a"


def fmt_p(p: Any) -> str:
    if not isnum(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def verdict(significant: Any) -> str:
    if significant is None or (isinstance(significant, float) and math.isnan(significant)):
        return "not testable (needs at least 2 seeds on each side)"
    return f"significant at {ALPHA:g}" if significant else "not significant"


def seeds_str(n: Any) -> str:
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def fmt_duration(seconds: Any) -> str:
    if not isnum(seconds):
        return "n/a"
    s = int(round(float(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def comparison_sentence(cmp: pd.Series, own: pd.Series | None = None, base: pd.Series | None = None) -> str:
    """'SparseMoE test accuracy 87.4 ± 0.3% vs dense 87.1 ± 0.2% (5 seeds): difference +0.3 points,
    95% CI [−0.1, +0.7], p = 0.21 (Welch), not significant.'

    ``cmp`` is a compare_to_baseline row; ``own`` and ``base`` (config_stats rows of the two sides)
    supply the ± intervals; without them the bare means are printed."""
    prefix, name = ("test", "test accuracy") if cmp["metric"] == "test_acc" else ("val", "validation accuracy")

    def side(stats: pd.Series | None, mean: Any) -> str:
        if stats is None:
            return fmt_pct(mean)
        return fmt_mean_ci(stats[f"{prefix}_mean"], stats[f"{prefix}_lo"], stats[f"{prefix}_hi"])

    n, nb = int(cmp["n"]), int(cmp["n_base"])
    seeds = seeds_str(n) if n == nb else f"{n} vs {nb} seeds"
    s = (f"{head_name(cmp['head'])} {name} {side(own, cmp['mean'])} vs dense {side(base, cmp['base_mean'])} "
         f"({seeds}): difference {fmt_num(100 * cmp['diff'], 1, signed=True)} points")
    if not isnum(cmp["lo"]):
        return f"{s}, 95% CI n/a; {verdict(None)}."
    ci = fmt_interval(cmp["lo"], cmp["hi"])
    return f"{s}, 95% CI {ci}, {fmt_p(cmp['p'])} (Welch), {verdict(cmp['significant'])}."


def comparison_sentences(comparisons: pd.DataFrame, best: pd.DataFrame) -> list[str]:
    """One sentence per MoE head, with each side's mean ± CI taken from the best-configuration table."""
    by_head = {r["head"]: r for _, r in best.iterrows()}
    return [comparison_sentence(c, by_head.get(c["head"]), by_head.get("dense")) for _, c in comparisons.iterrows()]


def findings(trials: pd.DataFrame, best: pd.DataFrame, comparisons: pd.DataFrame, sharp: pd.DataFrame,
             speedup: pd.DataFrame, dead: pd.DataFrame) -> list[str]:
    """Short sentences with the numbers that matter, in reading order; sections that were not run
    contribute nothing (the page says they were not run)."""
    out: list[str] = []
    counts = status_counts(trials)
    total = int(counts["n"].sum()) if not counts.empty else 0
    if total == 0:
        return ["No trials were recorded: run the sweep first."]
    failed = total - int(counts.loc[counts["status"].str.lower().isin({"done", "completed"}), "n"].sum())
    if failed:
        out.append(f"{failed} of {total} trials did not complete; every statistic uses completed trials only.")
    if not best.empty:
        top = best.sort_values("val_mean", ascending=False).iloc[0]
        out.append(f"Best head by mean validation accuracy: {head_name(top['head'])} ({top['label']}), validation "
                   f"{fmt_mean_ci(top['val_mean'], top['val_lo'], top['val_hi'])}, test "
                   f"{fmt_mean_ci(top['test_mean'], top['test_lo'], top['test_hi'])} ({seeds_str(top['n'])}).")
        if (best["n"] < 2).any():
            out.append("Some best configurations have a single completed seed: their intervals are n/a; "
                       "run more seeds before drawing conclusions.")
    out += comparison_sentences(comparisons, best)
    if not sharp.empty:
        split = "test" if "test" in set(sharp["split"]) else sharp["split"].iloc[0]
        s = sharp[sharp["split"] == split].sort_values("lambda_mean")
        parts = ", ".join(f"{head_name(r['head'])} {fmt_num(r['lambda_mean'], 2)} "
                          f"(CI {fmt_interval(r['lambda_lo'], r['lambda_hi'], 1.0, 2, signed=False)}, n={r['n']})"
                          for _, r in s.drop_duplicates("head").iterrows())
        out.append(f"Hessian λmax on the {split} split, flattest first: {parts}.")
    if not speedup.empty:
        for dispatch, g in speedup.groupby("dispatch"):
            r = g.sort_values("batch_size").iloc[-1]
            ratio, word = (r["speedup"], "faster") if r["speedup"] >= 1 else (1 / r["speedup"], "slower")
            out.append(f"SparseMoE ({dispatch} dispatch) is {fmt_num(ratio, 2)}× {word} than SoftMoE at batch size "
                       f"{int(r['batch_size'])} on {r['device']} ({fmt_num(r['sparse_ms'], 2)} vs "
                       f"{fmt_num(r['soft_ms'], 2)} ms median).")
    if not dead.empty:
        per = dead.groupby(["label", "num_experts"])["dead"].mean().reset_index()
        worst = per.sort_values("dead", ascending=False).iloc[0]
        if worst["dead"] > 0:
            out.append(f"Most dead experts at the last epoch: {worst['label']}, {fmt_num(worst['dead'], 1)} of "
                       f"{int(worst['num_experts'])} on average over seeds.")
        else:
            out.append("No MoE configuration has a dead expert at its last epoch.")
    return out
