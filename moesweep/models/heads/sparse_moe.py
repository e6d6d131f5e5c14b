"""Sparse MoE head: noisy top-k routing, only the selected experts run (k = 1 is the study's HardMoE).

Two dispatch paths compute the same function (to float rounding) and can be swapped at run time via
``head.dispatch``:

- ``batched``: sort the B·K assignments by expert, gather them into padded groups [E, M, D], run all
  experts with two bmm calls, un-sort and combine. One host sync in all (M = the largest group).
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
    """Σ_k weight[b, k] · expert_{index[b, k]}(x[b]) via sort + padded bmm: x [B, D] -> [B, C].

    Each expert's group is padded to M = the largest group, so the cost is E·M rows: near B·K when the
    load is balanced and never above the soft head's E·B, even if every row picks the same expert.
    Padding rows copy row 0 of x (no zero-fill pass); their outputs are never read.
    """
    batch, k = index.shape
    num_experts = experts.num_experts
    flat = index.flatten()  # [B*K] expert of each assignment; assignment a comes from row a // K
    order = flat.argsort(stable=True)  # assignments grouped by expert
    expert_sorted = flat[order]
    counts = torch.bincount(flat, minlength=num_experts)  # [E]
    group = int(counts.max())  # M: the one host sync of this path
    starts = counts.cumsum(0) - counts
    slot = torch.arange(flat.numel(), device=x.device) - starts[expert_sorted]  # position in its group
    dest = expert_sorted * group + slot  # [B*K] padded row of each sorted assignment
    src = torch.zeros(num_experts * group, dtype=torch.long, device=x.device).index_copy_(0, dest, order // k)
    out = experts.forward_padded(x.index_select(0, src).view(num_experts, group, -1))  # [E, M, C]
    row_of = torch.empty_like(dest).index_copy_(0, order, dest)  # padded row of assignment (b, k), row-major
    out = out.view(num_experts * group, -1).index_select(0, row_of)  # [B*K, C]
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
