"""Parquet schemas, atomic writers and readers: the only hand-off between sweep, analysis and report.

Every table has an explicit pyarrow schema here, carries ``sweep`` and ``trial_id`` (and ``config_id``
where it makes sense) so tables join cleanly, and is written to a temp file then renamed into place,
so a crash mid-write never leaves a truncated table behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
LF = pa.list_(pa.float64())

# Trial statuses in trials.parquet: done | failed (non-finite loss) | error (raised after retries) |
# stopped (ended early by the scheduler) | interrupted | pending.
DONE = "done"

# Utilization scalars logged per epoch, for the training pass and the validation set (prefix train_/val_).
ROUTE_METRICS = ("route_entropy", "sample_entropy", "load_cv", "max_overload", "dead_experts",
                 "near_dead_experts", "expert_class_nmi")

_KEY = [("sweep", S), ("trial_id", S), ("config_id", S), ("seed", I), ("head", S)]

TRIALS = pa.schema(_KEY + [
    ("num_experts", I), ("top_k", I), ("balance_loss", S), ("balance_weight", F),
    ("expert_hidden", S), ("dispatch", S), ("backbone", S), ("dataset", S), ("epochs", I),
    ("batch_size", I), ("lr", F), ("optimizer", S), ("schedule", S), ("weight_decay", F),
    ("config_json", S),
    ("status", S), ("error", S), ("epochs_done", I), ("best_epoch", I), ("best_val_acc", F),
    ("final_val_acc", F), ("test_acc", F), ("train_acc", F), ("params", I), ("head_params", I),
    ("active_head_macs", I), ("wall_s", F), ("node_id", S), ("checkpoint", S),
])

EPOCHS = pa.schema(_KEY + [
    # *_route_entropy and *_sample_entropy are normalized by log(E) to [0, 1].
    ("epoch", I), ("train_loss", F), ("train_acc", F), ("val_loss", F), ("val_acc", F),
    ("balance_loss", F), ("lr", F), ("epoch_s", F), ("images_per_s", F),
] + [(f"{split}_{m}", F) for split in ("train", "val") for m in ROUTE_METRICS])

EXPERTS = pa.schema([("sweep", S), ("trial_id", S), ("config_id", S), ("seed", I), ("head", S),
                     ("epoch", I), ("split", S), ("expert", I), ("load", F), ("importance", F)])

# Expert x class routing counts (top-1 expert), validation split, at the trial's last epoch.
EXPERT_CLASS = pa.schema([("sweep", S), ("trial_id", S), ("config_id", S), ("seed", I), ("head", S),
                          ("split", S), ("expert", I), ("label", I), ("count", I)])

CONFIGS = pa.schema([
    ("sweep", S), ("config_id", S), ("head", S), ("num_experts", I), ("top_k", I),
    ("balance_loss", S), ("balance_weight", F), ("config_json", S), ("n_seeds", I), ("n_done", I),
    ("best_val_acc_mean", F), ("best_val_acc_std", F), ("best_val_acc_ci_low", F), ("best_val_acc_ci_high", F),
    ("test_acc_mean", F), ("test_acc_std", F), ("test_acc_ci_low", F), ("test_acc_ci_high", F),
    ("route_entropy_mean", F),
])

_AKEY = [("sweep", S), ("trial_id", S), ("config_id", S), ("seed", I), ("head", S)]

SHARPNESS = pa.schema(_AKEY + [
    ("split", S), ("param_set", S), ("loss", S), ("n_samples", I), ("lambda_max", F),
    ("lambda_max_residual", F), ("top_eigenvalues", LF), ("top_residuals", LF), ("trace", F),
    ("trace_stderr", F), ("n_probes", I), ("n_hvp", I), ("seconds", F), ("params_hash", S),
])

SPECTRUM = pa.schema(_AKEY + [("split", S), ("param_set", S), ("grid", LF), ("density", LF),
                              ("params_hash", S)])

LANDSCAPE = pa.schema(_AKEY + [
    ("split", S), ("direction_kind", S), ("direction_id", I), ("alpha", F), ("loss", F),
    ("accuracy", F), ("routing_flip_rate", F), ("params_hash", S),
])

# Consistency checks recorded with the curves: eigvec curvature vs lambda_max, gaussian vs trace.
LANDSCAPE_CHECKS = pa.schema(_AKEY + [("split", S), ("check", S), ("measured", F), ("predicted", F),
                                      ("params_hash", S)])

# flops / active_flops are per call, i.e. for the whole batch of batch_size (images_per_s is per image).
LATENCY = pa.schema(_AKEY + [
    ("dispatch", S), ("device", S), ("threads", I), ("torch_version", S), ("scope", S),
    ("batch_size", I), ("median_ms", F), ("p10_ms", F), ("p90_ms", F), ("images_per_s", F),
    ("flops", F), ("active_flops", F), ("params_hash", S),
])

# Idempotency ledger of analysis tasks: one row per (trial, analysis, split, params_hash) attempt.
TASKS = pa.schema([("sweep", S), ("trial_id", S), ("analysis", S), ("split", S), ("params_hash", S),
                   ("status", S), ("error", S), ("attempts", I), ("seconds", F), ("node_id", S)])

# Row identity of the trial tables: refreshes upsert on these keys, so a row is never duplicated.
TRIAL_TABLE_KEYS: dict[str, list[str]] = {
    "trials": ["trial_id"], "epochs": ["trial_id", "epoch"], "experts": ["trial_id", "epoch", "split", "expert"],
    "expert_class": ["trial_id", "split", "expert", "label"],
}

SCHEMAS: dict[str, pa.Schema] = {
    "trials": TRIALS, "epochs": EPOCHS, "experts": EXPERTS, "expert_class": EXPERT_CLASS,
    "configs": CONFIGS, "sharpness": SHARPNESS, "spectrum": SPECTRUM, "landscape": LANDSCAPE,
    "landscape_checks": LANDSCAPE_CHECKS, "latency": LATENCY, "tasks": TASKS,
}


def table_path(results_dir: str | Path, name: str) -> Path:
    return Path(results_dir) / f"{name}.parquet"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def to_arrow(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Rows (dicts or a DataFrame) -> a table in exactly ``schema``; missing columns become nulls,
    extra keys are an error (a typo in a column name must not vanish silently)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    rows = list(rows)
    names = set(schema.names)
    for r in rows:
        extra = set(r) - names
        if extra:
            raise KeyError(f"columns not in schema: {sorted(extra)}")
    cols = {n: [_clean(r.get(n)) for r in rows] for n in schema.names}
    return pa.Table.from_pydict(cols, schema=schema)


def write_table(results_dir: str | Path, name: str, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Atomically (temp file + rename) write table ``name`` with its schema; returns the path."""
    table = to_arrow(rows, SCHEMAS[name])
    path = table_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_table(results_dir: str | Path, name: str) -> pd.DataFrame:
    """Read table ``name``; a missing file gives an empty frame with the schema's columns."""
    path = table_path(results_dir, name)
    if not path.exists():
        return SCHEMAS[name].empty_table().to_pandas()
    return pq.read_table(path, schema=SCHEMAS[name]).to_pandas()


def upsert_table(results_dir: str | Path, name: str, rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
                 key: list[str]) -> pd.DataFrame:
    """Merge ``rows`` into table ``name``: rows whose ``key`` columns match are replaced, the rest kept.

    Used for tables refreshed as work finishes, so re-running never duplicates a row."""
    new = to_arrow(rows, SCHEMAS[name]).to_pandas()
    old = read_table(results_dir, name)
    if len(old) and len(new):
        keys_new = set(map(tuple, new[key].astype(str).values.tolist()))
        mask = [tuple(k) not in keys_new for k in old[key].astype(str).values.tolist()]
        merged = pd.concat([old[mask], new], ignore_index=True)
    else:
        merged = new if len(new) else old
    write_table(results_dir, name, merged)
    return merged


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (manifest, state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None
