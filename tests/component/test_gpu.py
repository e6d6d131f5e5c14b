"""CUDA paths (skipped without a GPU): the same trainer and heads on the device, bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from moesweep.config import TrialCfg, from_dict
from moesweep.data import load_data
from moesweep.models.heads import create_head
from moesweep.train import train_trial

pytestmark = pytest.mark.gpu


def _cfg(kind: str, bf16: bool) -> TrialCfg:
    return from_dict(TrialCfg, {
        "data": {"name": "synthetic", "synthetic_size": 128, "synthetic_image_size": 8},
        "backbone": {"name": "cnn", "width": 8}, "head": {"kind": kind, "num_experts": 4, "top_k": 2},
        "train": {"epochs": 2, "batch_size": 32, "bf16": bf16, "device": "cuda"}})


@pytest.mark.parametrize("kind", ["dense", "soft", "sparse"])
@pytest.mark.parametrize("bf16", [False, True])
def test_trial_trains_on_cuda(kind: str, bf16: bool) -> None:
    cfg = _cfg(kind, bf16)
    data = load_data(cfg.data, "cuda")
    assert data.train_x.is_cuda
    res = train_trial(cfg, data)
    assert res.epochs_done == 2 and 0.0 <= res.test_acc <= 1.0


def test_batched_equals_naive_on_cuda() -> None:
    cfg = from_dict(TrialCfg, {"head": {"kind": "sparse", "num_experts": 16, "top_k": 2}}).head
    torch.manual_seed(0)
    head = create_head(cfg, 512, 10).cuda().eval()
    x = torch.randn(1024, 512, device="cuda")
    head.dispatch = "batched"
    a, _ = head(x)
    head.dispatch = "naive"
    b, _ = head(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
