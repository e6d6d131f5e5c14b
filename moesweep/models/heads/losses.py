"""Load-balancing and router losses: small pure functions on routing tensors (glossary in __init__).

- ``kl_uniform``: KL(p̄ ‖ uniform) of the batch-mean routing distribution.
- ``shazeer``: CV²(importance) + CV²(load), load from the smooth normal-CDF estimator of Shazeer et al.
- ``switch``: E · Σ_i f_i · P_i (Fedus et al., Switch Transformer).
- ``z_loss``: mean(logsumexp(logits)²) (Zoph et al., ST-MoE).

``aux_loss`` combines them into the weighted scalar a head reports as aux["balance_loss"].
"""

from __future__ import annotations

import torch
from torch import Tensor

from moesweep.models.heads.routing import Routing

BALANCE_LOSSES = ("none", "kl_uniform", "shazeer", "switch")


def kl_uniform(probs: Tensor) -> Tensor:
    """KL(p̄ ‖ u) = Σ_i p̄_i · log(E · p̄_i), with p̄ = probs.mean(0) [E] and u_i = 1/E.

    The mean distribution comes first, so the loss is 0 iff the batch's average routing is uniform and
    grows to log E when every sample routes to the same expert. Per-sample confidence is not penalised.
    """
    mean = probs.mean(0)  # [E]
    return torch.special.xlogy(mean, mean * probs.shape[-1]).sum()


def cv_squared(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation, population variance / mean² (0 for a constant vector)."""
    return x.var(unbiased=False) / (x.mean() ** 2 + eps)


def smooth_load(logits: Tensor, noisy_logits: Tensor, noise_std: Tensor, expert_index: Tensor) -> Tensor:
    """Shazeer's differentiable load [E]: Σ_x P(x, i), P(x, i) = Φ((clean_i − kth_excluding_i) / std_i).

    kth_excluding_i, the k-th largest noisy logit among the other experts, is the threshold expert i's
    fresh noise must clear: the (k+1)-th largest overall when i is in the top k, else the k-th largest.
    """
    k = expert_index.shape[1]
    top = noisy_logits.topk(k + 1, dim=-1).values  # [B, K+1]
    selected = torch.zeros_like(logits, dtype=torch.bool).scatter(1, expert_index, True)  # [B, E]
    threshold = torch.where(selected, top[:, k:k + 1], top[:, k - 1:k])  # [B, E]
    return torch.special.ndtr((logits - threshold) / noise_std).sum(0)


def shazeer(gates: Tensor, expert_index: Tensor, logits: Tensor, noisy_logits: Tensor,
            noise_std: Tensor | None) -> Tensor:
    """CV²(importance) + CV²(load); importance_i = Σ_x gates[x, i].

    Without noise (eval, noisy=False, or a soft router) or with k = E (nothing to estimate), the load is the
    hard assignment count: still the right number, but it carries no gradient, so only importance trains.
    """
    num_experts = gates.shape[1]
    if noise_std is None or expert_index.shape[1] >= num_experts:
        load = torch.bincount(expert_index.flatten(), minlength=num_experts).to(gates.dtype)
    else:
        load = smooth_load(logits, noisy_logits, noise_std, expert_index)
    return cv_squared(gates.sum(0)) + cv_squared(load)


def switch(probs: Tensor, expert_index: Tensor) -> Tensor:
    """E · Σ_i f_i · P_i: f_i = share of the B·K assignments sent to expert i, P_i = mean prob of i.

    Equals 1 under perfectly uniform routing; gradient flows through P only (f is a count).
    """
    num_experts = probs.shape[1]
    f = torch.bincount(expert_index.flatten(), minlength=num_experts).to(probs.dtype) / expert_index.numel()
    return num_experts * (f * probs.mean(0)).sum()


def z_loss(logits: Tensor) -> Tensor:
    """mean_x logsumexp(logits[x])²: keeps router logits small, so the softmax stays out of saturation."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def balance(kind: str, r: Routing) -> Tensor:
    """The unweighted balance loss named ``kind`` for one batch's routing (float32)."""
    if kind == "none":
        return r.logits.new_zeros((), dtype=torch.float32)
    if kind == "kl_uniform":
        return kl_uniform(r.probs.float())
    if kind == "shazeer":
        std = None if r.noise_std is None else r.noise_std.float()
        return shazeer(r.gates.float(), r.expert_index, r.logits.float(), r.noisy_logits.float(), std)
    if kind == "switch":
        return switch(r.probs.float(), r.expert_index)
    raise ValueError(f"unknown balance loss {kind!r} (expected one of {', '.join(BALANCE_LOSSES)})")


def aux_loss(kind: str, r: Routing, balance_weight: float, z_loss_weight: float) -> Tensor:
    """balance_weight · balance + z_loss_weight · z_loss: the scalar added to the task loss."""
    total = balance_weight * balance(kind, r)
    if z_loss_weight > 0:  # skip the logsumexp when unused
        total = total + z_loss_weight * z_loss(r.logits.float())
    return total

