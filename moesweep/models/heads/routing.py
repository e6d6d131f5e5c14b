"""Routers: map features [B, D] to a routing decision over E experts (see the glossary in __init__).

Two routers, both with bias-free projections (as in Shazeer et al. 2017):

- ``SoftRouter``: a temperature softmax; every expert is used, the gates are the softmax itself.
- ``NoisyTopKRouter``: Shazeer's noisy top-k gating. Noise only in training and only if ``noisy``.

A router returns a ``Routing`` record. Routers know nothing about the experts; dispatch is the head's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Routing:
    """One batch's routing decision.

    logits: [B, E] clean router logits x·W_g (what the z-loss penalises).
    noisy_logits: [B, E] logits the top-k ran on (== logits when no noise was drawn).
    noise_std: [B, E] per-logit noise scale, or None when no noise was drawn (eval, or noisy=False).
    probs: [B, E] full softmax over the routing logits (noise-free in eval).
    expert_index: [B, K] chosen experts (soft router: the argmax, K = 1).
    expert_weight: [B, K] combine weight of each chosen expert.
    gates: [B, E] combine weights scattered to all experts (zeros where not selected).
    """

    logits: Tensor
    noisy_logits: Tensor
    noise_std: Tensor | None
    probs: Tensor
    expert_index: Tensor
    expert_weight: Tensor
    gates: Tensor


class SoftRouter(nn.Module):
    """Dense softmax gate: gates = softmax(x W_g / temperature); all E experts active."""

    def __init__(self, in_dim: int, num_experts: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.w_gate = nn.Linear(in_dim, num_experts, bias=False)
        self.temperature = temperature

    def forward(self, x: Tensor) -> Routing:
        logits = self.w_gate(x)  # [B, E]
        probs = torch.softmax(logits / self.temperature, dim=-1)
        top = probs.argmax(dim=-1, keepdim=True)  # [B, 1]: reported for metrics only
        return Routing(logits, logits, None, probs, top, probs.gather(1, top), probs)

    def macs(self) -> int:
        return self.w_gate.in_features * self.w_gate.out_features


class NoisyTopKRouter(nn.Module):
    """Noisy top-k gating (Shazeer et al. 2017, eq. 3-5).

    H(x) = x W_g + ε · (softplus(x W_noise) + noise_floor), ε ~ N(0, 1), training only.
    Keep the top k of H, softmax over the kept logits. For k = 1 that softmax is identically 1, which
    would cut the router off from the task loss, so the combine weight is instead the chosen expert's
    probability under the full softmax of H (Switch Transformer style).
    W_noise starts at zero as in the paper, so training begins with noise of scale softplus(0) ≈ 0.69.
    """

    def __init__(self, in_dim: int, num_experts: int, k: int, noisy: bool = True,
                 noise_floor: float = 1e-2) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {k}")
        self.k = k
        self.noise_floor = noise_floor
        self.w_gate = nn.Linear(in_dim, num_experts, bias=False)
        self.w_noise = nn.Linear(in_dim, num_experts, bias=False) if noisy else None
        if self.w_noise is not None:
            nn.init.zeros_(self.w_noise.weight)

    def forward(self, x: Tensor) -> Routing:
        clean = self.w_gate(x)  # [B, E]
        noise_std = None
        noisy = clean
        if self.training and self.w_noise is not None:
            noise_std = F.softplus(self.w_noise(x)) + self.noise_floor  # [B, E]
            noisy = clean + torch.randn_like(clean) * noise_std
        probs = torch.softmax(noisy, dim=-1)
        top_val, top_idx = noisy.topk(self.k, dim=-1)  # [B, K]
        if self.k == 1:
            weight = probs.gather(1, top_idx)  # Switch-style: full-softmax prob keeps router gradient
        else:
            weight = torch.softmax(top_val, dim=-1)
        gates = torch.zeros_like(probs).scatter(1, top_idx, weight)  # [B, E]
        return Routing(clean, noisy, noise_std, probs, top_idx, weight, gates)

    def macs(self) -> int:
        """Inference MACs per sample: only x W_g runs in eval (training adds D·E for W_noise)."""
        return self.w_gate.in_features * self.w_gate.out_features
