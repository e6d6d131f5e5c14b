"""Sparse MoE head: noisy top-k routing, only the selected experts run (k = 1 is the study's HardMoE).

Two dispatch paths compute the same function (to float rounding) and can be swapped at run time via
``head.dispatch``:

- ``batched``: sort the B·K assignments by expert, scatter them into padded groups [E, M, D], run all
  experts with two bmm calls, un-sort and combine. One host sync in all (M = max group size).
- ``naive``: the study's loop over experts, selecting each expert's rows with a boolean mask
  (a host sync per expert).
"""

from __future__ import annotations

import torch
from torch import Tensor

from moesweep.config import HeadCfg
from moesweep.models.heads.experts import ExpertMLPs
from moesweep.models.heads.routing import NoisyTopKRouter, Routing
from moesweep.models.heads.soft_moe import MoEHead

DISPATCHES = ("batched", "naive")


def dispatch_batched(experts: ExpertMLPs, x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Σ_k weight[b, k] · expert_{index[b, k]}(x[b]) via sort + padded bmm: x [B, D] -> [B, C]."""
    batch, k = index.shape
    flat = index.flatten()  # [B*K] expert of each assignment, row-major so row = position // K
    order = flat.argsort(stable=True)  # assignments grouped by expert
    expert_sorted = flat[order]
    counts = torch.bincount(flat, minlength=experts.num_experts)  # [E]
    starts = counts.cumsum(0) - counts
    slot = torch.arange(flat.numel(), device=x.device) - starts[expert_sorted]  # position inside its group
    groups = x.new_zeros(experts.num_experts, int(counts.max()), x.shape[1])  # [E, M, D]; the one sync
    groups[expert_sorted, slot] = x[order // k]
    out = experts.forward_padded(groups)[expert_sorted, slot]  # [B*K, C] in sorted order
    out = torch.empty_like(out).index_copy(0, order, out)  # back to (row, k) order
    return torch.einsum("bk,bkc->bc", weight, out.view(batch, k, -1))  # [B, C]


def dispatch_naive(experts: ExpertMLPs, x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Same result as ``dispatch_batched``, one expert at a time with boolean masks (the reference)."""
    y = x.new_zeros(x.shape[0], experts.num_classes)
    for e in range(experts.num_experts):
        mask = index == e  # [B, K]
        rows = mask.any(dim=-1)  # [B]
        if not rows.any():
            continue
        w = (weight * mask).sum(dim=-1)[rows]  # [N_e]: each row picks expert e at most once
        y[rows] += w[:, None] * experts.forward_expert(e, x[rows])
    return y


class SparseMoEHead(MoEHead):
    """Noisy top-k gated MoE; ``dispatch`` in {"batched", "naive"} may be changed at any time."""

    def __init__(self, cfg: HeadCfg, in_dim: int, num_classes: int) -> None:
        router = NoisyTopKRouter(in_dim, cfg.num_experts, cfg.top_k, cfg.noisy, cfg.noise_floor)
        super().__init__(cfg, in_dim, num_classes, router, active_experts=cfg.top_k)
        self.dispatch = cfg.dispatch

    def combine(self, x: Tensor, r: Routing) -> Tensor:
        if self.dispatch == "batched":
            return dispatch_batched(self.experts, x, r.expert_index, r.expert_weight)
        if self.dispatch == "naive":
            return dispatch_naive(self.experts, x, r.expert_index, r.expert_weight)
        raise ValueError(f"unknown dispatch {self.dispatch!r} (expected one of {', '.join(DISPATCHES)})")
