"""The core trains, and a space validates, with Ray absent.

A fresh interpreter installs a meta-path finder that makes ``import ray`` (and ``ray.*``) raise
ImportError although Ray is installed, then trains a tiny synthetic trial and runs
``moesweep launch --dry-run``. Both must work, and no ``ray`` module may end up in ``sys.modules``.
One subprocess serves every test here: the interpreter start (torch import) is the whole cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import importlib.abc, json, math, sys


class BlockRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"ray is blocked in this test ({name})")
        return None


sys.meta_path.insert(0, BlockRay())
out = {}
try:
    import ray  # noqa: F401
    out["blocker_works"] = False
except ImportError:
    out["blocker_works"] = True

import torch

torch.set_num_threads(1)
from moesweep.config import TrialCfg, from_dict
from moesweep.data import load_data
from moesweep.train import train_trial

cfg = from_dict(TrialCfg, {
    "data": {"name": "synthetic", "synthetic_size": 64, "synthetic_classes": 4, "synthetic_image_size": 8},
    "backbone": {"name": "cnn", "width": 8},
    "head": {"kind": "sparse", "hidden": 16, "num_experts": 4, "top_k": 2, "expert_hidden": 8},
    "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "threads": 1},
    "seed": 0,
})
reports = []
res = train_trial(cfg, load_data(cfg.data, "cpu"), report=lambda m, ckpt: reports.append(m))
out["train"] = {"status": res.status, "epochs_done": res.epochs_done, "reports": len(reports),
                "val_acc": res.final_val_acc, "test_acc": res.test_acc, "params": res.params}
out["ray_after_train"] = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))

from moesweep.cli import main

out["dry_run_rc"] = main(["launch", "--space", sys.argv[2], "--dry-run"])
out["ray_after_dry_run"] = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
'''


@pytest.fixture(scope="module")
def ray_free(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ray_free")
    result = tmp / "result.json"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(result), str(REPO / "search_spaces" / "quick.yaml")],
                          capture_output=True, text=True, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


def test_the_blocker_really_blocks_ray(ray_free: dict[str, Any]) -> None:
    assert ray_free["blocker_works"], "import ray succeeded, so this file would test nothing"


def test_train_trial_runs_without_ray(ray_free: dict[str, Any]) -> None:
    t = ray_free["train"]
    assert t["status"] == "done" and t["epochs_done"] == 1 and t["reports"] == 1
    assert 0.0 <= t["val_acc"] <= 1.0 and 0.0 <= t["test_acc"] <= 1.0
    assert t["params"] > 0
    assert ray_free["ray_after_train"] == []


def test_dry_run_validates_without_ray(ray_free: dict[str, Any]) -> None:
    assert ray_free["dry_run_rc"] == 0
    assert ray_free["ray_after_dry_run"] == []
