"""Classifier heads: dense MLP, soft MoE and sparse (noisy top-k) MoE, behind one contract.

Axis glossary (used in shape comments throughout this package):
    B batch   D feature (head input)   E experts   H expert hidden   K top-k   C classes

Every head maps features [B, D] to (logits [B, C], aux); aux["balance_loss"] is the weighted auxiliary
loss (zero for dense) and MoE heads add aux["gates"] [B, E], aux["probs"] [B, E], aux["expert_index"]
[B, K] and aux["router_logits"] [B, E]. Heads also report ``num_params()`` and ``active_macs()``.
"""

from __future__ import annotations

from torch import nn

from moesweep.config import HeadCfg
from moesweep.models.heads.dense import DenseHead
from moesweep.models.heads.soft_moe import MoEHead, SoftMoEHead
from moesweep.models.heads.sparse_moe import SparseMoEHead

# The only place a head kind string becomes a class; keys match HeadCfg.kind's allowed values.
HEADS: dict[str, type[nn.Module]] = {"dense": DenseHead, "soft": SoftMoEHead, "sparse": SparseMoEHead}


def create_head(cfg: HeadCfg, in_dim: int, num_classes: int) -> nn.Module:
    """Build the head named by ``cfg.kind`` for features of width ``in_dim``."""
    if cfg.kind not in HEADS:
        raise ValueError(f"head.kind: unknown head {cfg.kind!r} (expected one of {', '.join(HEADS)})")
    return HEADS[cfg.kind](cfg, in_dim, num_classes)


__all__ = ["HEADS", "DenseHead", "MoEHead", "SoftMoEHead", "SparseMoEHead", "create_head"]
