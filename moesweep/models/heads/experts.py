"""Expert MLPs D → H_e → C held as batched weights, routing-agnostic.

All E experts live in four tensors (w1 [E, D, H], b1 [E, H], w2 [E, H, C], b2 [E, C]), so a head can
run every expert on every row (``forward_all``, soft MoE), all experts on padded groups with two bmm
calls (``forward_padded``), or one expert on its own rows (``per_expert`` + ``forward_one``).
Also the parameter arithmetic behind ``expert_hidden: auto``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp_num_params(in_dim: int, hidden: int, num_classes: int) -> int:
    """Parameters of one D → H → C MLP with biases (the dense head, or one expert)."""
    return in_dim * hidden + hidden + hidden * num_classes + num_classes


def auto_expert_hidden(budget: int, in_dim: int, num_classes: int, num_experts: int,
                       router_params: int, tol: float = 0.02) -> int:
    """H_e whose E experts plus the router come closest to ``budget`` parameters.

    Warns (rather than fails, so a sweep point is not lost) when even the best H_e misses by > tol,
    which happens only when the budget leaves each expert a handful of hidden units.
    """
    per_unit = num_experts * (in_dim + 1 + num_classes)  # params added by one more hidden unit
    fixed = router_params + num_experts * num_classes  # router + output biases
    guess = max(1, (budget - fixed) // per_unit)
    best = min((guess, guess + 1), key=lambda h: abs(fixed + h * per_unit - budget))
    miss = abs(fixed + best * per_unit - budget) / budget
    if miss > tol:
        warnings.warn(f"expert_hidden auto: best H_e={best} misses the dense budget ({budget} params) "
                      f"by {miss:.1%} (> {tol:.0%})", stacklevel=2)
    return best


class ExpertMLPs(nn.Module):
    """E independent MLPs D → H → C (ReLU, dropout on the hidden layer) stored as stacked weights."""

    def __init__(self, num_experts: int, in_dim: int, hidden: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_experts, self.in_dim, self.hidden, self.num_classes = num_experts, in_dim, hidden, num_classes
        self.w1 = nn.Parameter(torch.empty(num_experts, in_dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, num_classes))
        self.b2 = nn.Parameter(torch.empty(num_experts, num_classes))
        self.dropout = nn.Dropout(dropout)
        # Same distribution as nn.Linear's default (U(±1/sqrt(fan_in))), so experts and dense start alike.
        for w, b, fan_in in ((self.w1, self.b1, in_dim), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def _act(self, h: Tensor) -> Tensor:
        return self.dropout(F.relu(h))

    def forward_all(self, x: Tensor) -> Tensor:
        """Every expert on every row: x [B, D] -> [B, E, C]."""
        h = self._act(torch.einsum("bd,edh->beh", x, self.w1) + self.b1)  # [B, E, H]
        return torch.einsum("beh,ehc->bec", h, self.w2) + self.b2  # [B, E, C]

    def forward_padded(self, x: Tensor) -> Tensor:
        """Each expert on its own padded group: x [E, M, D] -> [E, M, C] (two bmm calls)."""
        h = self._act(torch.baddbmm(self.b1.unsqueeze(1), x, self.w1))  # [E, M, H]
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)  # [E, M, C]

    def per_expert(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """(w1, b1, w2, b2) views of each expert, for ``forward_one``.

        One unbind per forward, not ``w1[e]`` per expert: indexing would give every expert its own
        full-size [E, ...] zero gradient in backward, an E-fold cost that has nothing to do with dispatch.
        """
        return list(zip(self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0), self.b2.unbind(0)))

    def forward_one(self, params: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
        """One expert (``per_expert()[e]``) on its rows: x [N, D] -> [N, C]."""
        w1, b1, w2, b2 = params
        return torch.addmm(b2, self._act(torch.addmm(b1, x, w1)), w2)  # [N, H] -> [N, C]

    def macs_per_expert(self) -> int:
        return self.in_dim * self.hidden + self.hidden * self.num_classes
