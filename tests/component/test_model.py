"""Classifier = backbone + every registered head: forward contract, gradients, parameter counts."""

from __future__ import annotations

import pytest
import torch

from moesweep.config import BackboneCfg, HeadCfg, TrialCfg
from moesweep.models import Classifier, build_model, count_params
from moesweep.models.heads import HEADS


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_build_model_forward_backward(kind):
    torch.manual_seed(0)
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=8),
                   head=HeadCfg(kind=kind, hidden=16, num_experts=4, top_k=2, expert_hidden=8))
    model = build_model(cfg, in_channels=1, image_size=8, num_classes=10)
    assert isinstance(model, Classifier)
    x = torch.randn(6, 1, 8, 8)
    logits, aux = model(x)
    assert logits.shape == (6, 10) and torch.isfinite(logits).all()
    assert aux["balance_loss"].shape == ()
    (torch.nn.functional.cross_entropy(logits, torch.arange(6)) + aux["balance_loss"]).backward()
    # the task loss reaches the first conv of the backbone through the head
    first_conv = model.backbone.features[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_head_input_width_follows_backbone():
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=8), head=HeadCfg(kind="dense", hidden=16))
    model = build_model(cfg, in_channels=3, image_size=16, num_classes=4)
    assert model.backbone.out_dim == 32
    # dense head: D*H + H + H*C + C parameters, D = backbone.out_dim
    assert count_params(model.head) == 32 * 16 + 16 + 16 * 4 + 4
    assert count_params(model) == count_params(model.backbone) + count_params(model.head)
