"""Shared helpers for sweep integration tests: tiny spaces and running the real CLI in a subprocess.

Drivers run as subprocesses (as a user would run them): Ray caches process-wide state (auth mode,
the global worker), so a driver inside pytest would leak into other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

TINY_BASE: dict[str, Any] = {
    "data": {"name": "synthetic", "synthetic_size": 96, "synthetic_classes": 4, "synthetic_image_size": 8},
    "backbone": {"name": "cnn", "width": 4},
    "head": {"kind": "dense", "hidden": 32, "num_experts": 4, "top_k": 1, "balance_weight": 0.01},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "schedule": "cosine", "eval_batch_size": 256},
}

TINY_ANALYSIS: dict[str, Any] = {
    "what": ["sharpness", "landscape", "latency"], "top": 1, "samples": 64, "batch_size": 64,
    "param_sets": ["all"], "top_eigs": 2, "lanczos_iters": 4, "probes": 4, "slq_vectors": 1,
    "directions": 1, "points": 5, "latency_batch_sizes": [1, 8], "latency_repeats": 3,
}


def write_space(tmp: Path, name: str = "tiny", **overrides: Any) -> Path:
    space: dict[str, Any] = {
        "name": name, "base": TINY_BASE,
        "search": {"head.kind": {"grid": ["dense", "sparse"]}},
        "seeds": [0, 1], "search_alg": "grid", "scheduler": {"kind": "fifo"},
        "resources": {"cpu": 1, "gpu": 0}, "analysis_resources": {"cpu": 1, "gpu": 0},
        "analysis": TINY_ANALYSIS,
    }
    space.update(overrides)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def moesweep(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run ``moesweep ARGS`` in a subprocess; on failure show its output in the assertion."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "moesweep.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check:
        assert proc.returncode == 0, f"moesweep {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc
