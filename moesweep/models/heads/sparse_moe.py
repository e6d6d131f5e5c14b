"""Sparse MoE head: noisy top-k routing, only the selected experts run (k = 1 is the study's HardMoE).

Two dispatch paths compute the same function (to float rounding) and can be swapped at run time via
``head.dispatch``:

- ``batched``: sort the B·K assignments by expert, gather the rows once, run the experts on their
  groups (padded to [E, M, D] and two bmm calls while padding is cheap, else contiguous slices one
  expert at a time), un-sort and combine. One host sync in all (the group sizes).
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
# Batched dispatch pads every expert's group to the largest one (one bmm beats E small matmuls) while the
# padded rows are at most PAD_LIMIT times the real ones or PAD_ROWS in all (small problems: per-expert
# call overhead outweighs the waste). Past both, as when routing collapses onto a few experts, it runs
# the contiguous slices one expert at a time. Both constants are where the two paths crossed on a CPU.
PAD_LIMIT, PAD_ROWS = 2.0, 4096


def dispatch_batched(experts: ExpertMLPs, x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Σ_k weight[b, k] · expert_{index[b, k]}(x[b]) with assignments grouped by a sort: x [B, D] -> [B, C].

    The group sizes come to the host once (one sync for the whole batch, none per expert).
    """
    batch, k = index.shape
    flat = index.flatten()  # [B*K] expert of each assignment; assignment a comes from row a // K
    order = flat.argsort(stable=True)  # assignments grouped by expert, in expert order
    counts = torch.bincount(flat, minlength=experts.num_experts)  # [E]
    sizes = counts.tolist()  # the one host sync of this path
    group = max(sizes)
    if experts.num_experts * group <= max(PAD_LIMIT * flat.numel(), PAD_ROWS):
        out = _run_padded(experts, x, order // k, flat[order], counts, group)
    else:
        rows = x.index_select(0, order // k).split(sizes)  # contiguous [n_e, D] slices
        out = torch.cat([experts.forward_one(p, r) for p, r, n in zip(experts.per_expert(), rows, sizes) if n])
    out = torch.empty_like(out).index_copy(0, order, out)  # [B*K, C] back to (row, k) order
    return torch.einsum("bk,bkc->bc", weight, out.view(batch, k, -1))  # [B, C]


def _run_padded(experts: ExpertMLPs, x: Tensor, token: Tensor, expert: Tensor, counts: Tensor,
                group: int) -> Tensor:
    """Sorted assignments (source row ``token``, ``expert``) through padded groups [E, M = group, D].

    Returns [B*K, C] in sorted order. Padding rows copy row 0 of x (no zero-fill pass); never read.
    """
    starts = counts.cumsum(0) - counts
    slot = torch.arange(token.numel(), device=x.device) - starts[expert]  # position inside its group
    dest = expert * group + slot  # padded row of each sorted assignment
    src = torch.zeros(counts.numel() * group, dtype=torch.long, device=x.device).index_copy_(0, dest, token)
    out = experts.forward_padded(x.index_select(0, src).view(counts.numel(), group, -1))  # [E, M, C]
    return out.view(-1, out.shape[-1]).index_select(0, dest)


def dispatch_naive(experts: ExpertMLPs, x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Same result as ``dispatch_batched``, one expert at a time with boolean masks (the reference)."""
    y = x.new_zeros(x.shape[0], experts.num_classes)
    for e, params in enumerate(experts.per_expert()):
        mask = index == e  # [B, K]
        rows = mask.any(dim=-1)  # [B]
        if not rows.any():
            continue
        w = (weight * mask).sum(dim=-1)[rows]  # [N_e]: each row picks expert e at most once
        y[rows] += w[:, None] * experts.forward_one(params, x[rows])
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
