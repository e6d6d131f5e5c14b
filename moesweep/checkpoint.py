"""Checkpoints: atomic save, ``weights_only`` load, and rebuilding a model from one.

One file, ``state.pt``, holds everything a trial needs to resume bit-identically on CPU (model,
optimizer, schedule position, RNG states, history, best-so-far) plus the trial config and the data
shape, so analysis can rebuild the best model from the checkpoint alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not a moesweep checkpoint."""


def state_path(path: str | Path) -> Path:
    """Accept a checkpoint directory or the state file itself."""
    p = Path(path)
    return p / STATE_FILE if p.is_dir() or p.suffix != ".pt" else p


def save_state(checkpoint_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``checkpoint_dir/state.pt`` via a temp file + rename (never a torn file)."""
    d = Path(checkpoint_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / STATE_FILE
    tmp = d / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; errors are one line naming the file."""
    p = state_path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no checkpoint here")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or "model" not in state or "cfg" not in state:
        raise CheckpointError(f"{p}: not a moesweep checkpoint (missing model/cfg)")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu", which: str = "best"):
    """Rebuild the model stored in a checkpoint; ``which`` = ``best`` (best validation epoch) or ``last``.

    Returns ``(model, cfg, state)`` with the model in eval mode on ``device``."""
    from moesweep.config import TrialCfg, from_dict
    from moesweep.models import build_model

    state = load_state(path, map_location=device)
    cfg = from_dict(TrialCfg, state["cfg"])
    shape = state["data_shape"]
    model = build_model(cfg, shape["in_channels"], shape["image_size"], shape["num_classes"])
    weights = state["best_model"] if which == "best" and state.get("best_model") else state["model"]
    model.load_state_dict(weights)
    model.to(device).eval()
    return model, cfg, state
