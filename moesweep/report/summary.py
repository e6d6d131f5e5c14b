"""Terminal summary (``moesweep summary RESULTS_DIR``): the best configuration per head as a rich table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from moesweep.report.analysis_info import sharpness_info
from moesweep.report.info import best_configs, load_results, status_counts
from moesweep.report.text import fmt_mean_ci, fmt_num, head_name


def _sharp_cell(sharp: pd.DataFrame, config_id: str, split: str, stat: str, digits: int) -> str:
    """Mean ± 95% CI of λmax (``stat`` 'lambda') or the trace over one configuration's analysed seeds."""
    sub = sharp[(sharp["config_id"] == config_id) & (sharp["split"] == split)]
    if sub.empty:
        return "-"
    r = sharpness_info(sub).iloc[0]
    return fmt_mean_ci(r[f"{stat}_mean"], r[f"{stat}_lo"], r[f"{stat}_hi"], 1.0, "", digits)


def _latency_cell(lat: pd.DataFrame, config_id: str) -> str:
    """Median latency at the largest timed batch size (batched dispatch preferred)."""
    sub = lat[lat["config_id"] == config_id]
    if sub.empty:
        return "-"
    if (sub["dispatch"] == "batched").any():
        sub = sub[sub["dispatch"] == "batched"]
    bs = sub["batch_size"].max()
    return f"{fmt_num(sub.loc[sub['batch_size'] == bs, 'median_ms'].median(), 2)} ms @ {int(bs)}"


def summary_table(results_dir: str | Path) -> Table:
    """Best configuration per head: mean ± 95% CI of validation and test accuracy over seeds, the seed
    count, and λmax / trace / latency when those analyses were run."""
    R = load_results(results_dir)
    best = best_configs(R["trials"])
    counts = status_counts(R["trials"])
    status = ", ".join(f"{n} {s}" for s, n in zip(counts["status"], counts["n"])) or "no trials"
    name = R.manifest.get("name") or R.dir.resolve().name
    t = Table(title=f"{name}: best configuration per head", caption=f"trials: {status}; ± = 95% CI over seeds",
              header_style="bold", box=box.SIMPLE_HEAD)
    cols = [("head", "left"), ("configuration", "left"), ("seeds", "right"), ("val acc", "right"),
            ("test acc", "right")]
    sharp = R["sharpness"]
    split = "test" if "test" in set(sharp["split"]) else (sharp["split"].iloc[0] if len(sharp) else "")
    extra = [c for c, tbl in ((f"λmax ({split})", "sharpness"), (f"trace ({split})", "sharpness"),
                              ("latency", "latency")) if len(R[tbl])]
    for c, just in cols + [(c, "right") for c in extra]:
        # Wrapping (default) over truncation: a narrow terminal must not hide a number or the configuration.
        t.add_column(c, justify=just, min_width={"seeds": 5, "head": 9}.get(c))  # type: ignore[arg-type]
    for _, b in best.iterrows():
        cells = [head_name(b["head"]), str(b["label"]), str(b["n"]),
                 fmt_mean_ci(b["val_mean"], b["val_lo"], b["val_hi"]),
                 fmt_mean_ci(b["test_mean"], b["test_lo"], b["test_hi"])]
        for c in extra:
            cells.append(_sharp_cell(sharp, b["config_id"], split, "lambda", 2) if c.startswith("λmax") else
                         _sharp_cell(sharp, b["config_id"], split, "trace", 1) if c.startswith("trace") else
                         _latency_cell(R["latency"], b["config_id"]))
        t.add_row(*cells)
    return t


def print_summary(results_dir: str | Path, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(results_dir))
