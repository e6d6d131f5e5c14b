"""Expert-utilization metrics: pure functions on routing tensors, plus an epoch accumulator.

Inputs are a head's aux tensors (see moesweep.models.heads): ``probs`` [B, E] full routing distribution,
``expert_index`` [B, K] chosen experts (column 0 is the top-1 expert), and integer labels [B].

``UtilizationMeter`` sums per-batch statistics so the trainer can report over a whole epoch;
``summarize`` turns the sums into the metric dict (names in ``SCALARS`` plus the vectors "load",
"importance" and the E×C matrix "expert_class"). Dense heads have no gates: the meter returns {}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCALARS = ("load_cv", "max_overload", "route_entropy", "sample_entropy", "dead_experts",
           "near_dead_experts", "expert_class_nmi")
NEAR_DEAD = 0.1  # an expert is near-dead below NEAR_DEAD / E of the assignments


def load_counts(expert_index: Tensor, num_experts: int) -> Tensor:
    """Routing assignments per expert [E] (all K choices of every sample count)."""
    return torch.bincount(expert_index.flatten(), minlength=num_experts)


def expert_class_counts(expert_index: Tensor, labels: Tensor, num_experts: int, num_classes: int) -> Tensor:
    """Counts [E, C] of (top-1 expert, label) pairs."""
    pair = expert_index[:, 0] * num_classes + labels  # flat (e, c) cell of each sample
    return torch.bincount(pair, minlength=num_experts * num_classes).view(num_experts, num_classes)


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy in nats along the last axis (0 · log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def normalized_entropy(p: Tensor) -> Tensor:
    """Entropy / log E in [0, 1]: 1 for uniform routing, 0 for one expert (defined 1 when E = 1)."""
    num_experts = p.shape[-1]
    return entropy(p) / math.log(num_experts) if num_experts > 1 else torch.ones_like(p[..., 0])


def nmi_from_counts(counts: Tensor) -> float:
    """Normalized mutual information of a contingency table, arithmetic-mean normalization.

    Same convention as sklearn's ``normalized_mutual_info_score`` (its default): MI / ((H_row + H_col)/2);
    1.0 when both marginals are single-valued, 0.0 when only one is.
    """
    joint = counts.double() / counts.sum()
    rows, cols = joint.sum(1), joint.sum(0)
    if (rows > 0).sum() <= 1 and (cols > 0).sum() <= 1:
        return 1.0
    independent = rows[:, None] * cols[None, :]  # [E, C] joint under independence
    mi = torch.special.xlogy(joint, joint / independent.clamp_min(1e-300)).sum()
    norm = (entropy(rows) + entropy(cols)) / 2
    return float(mi / norm) if norm > 0 else 0.0


def summarize(load: Tensor, prob_sum: Tensor, sample_entropy_sum: float, num_samples: int,
              expert_class: Tensor) -> dict:
    """Metric dict from accumulated totals.

    Args:
        load: assignments per expert [E]. prob_sum: Σ_x probs[x] [E].
        sample_entropy_sum: Σ_x normalized entropy of probs[x]. num_samples: samples seen.
        expert_class: (top-1 expert, label) counts [E, C].
    """
    load = load.double().cpu()
    num_experts = load.numel()
    share = load / load.sum()  # load fraction per expert
    importance = prob_sum.double().cpu() / prob_sum.sum()
    mean = load.mean()
    return {
        "load_cv": float(load.std(unbiased=False) / mean),
        "max_overload": float(load.max() / mean),
        "route_entropy": float(normalized_entropy(importance)),
        "sample_entropy": sample_entropy_sum / num_samples,
        "dead_experts": int((load == 0).sum()),
        "near_dead_experts": int((share < NEAR_DEAD / num_experts).sum()),  # includes the dead ones
        "expert_class_nmi": nmi_from_counts(expert_class),
        "load": share.tolist(),
        "importance": importance.tolist(),
        "expert_class": expert_class.long().cpu().tolist(),
    }


def routing_metrics(aux: dict[str, Tensor], labels: Tensor, num_classes: int) -> dict:
    """The metric dict of one batch ({} for a head without gates)."""
    meter = UtilizationMeter(aux["probs"].shape[1] if "probs" in aux else 1, num_classes)
    meter.update(aux, labels)
    return meter.compute()


class UtilizationMeter:
    """Accumulates routing statistics over batches; ``compute()`` gives ``summarize``'s dict."""

    def __init__(self, num_experts: int, num_classes: int) -> None:
        self.num_experts, self.num_classes = num_experts, num_classes
        self.reset()

    def reset(self) -> None:
        self.load: Tensor | None = None  # stays on the aux device: no host sync until compute()
        self.prob_sum: Tensor | None = None
        self.expert_class: Tensor | None = None
        self.sample_entropy_sum: Tensor | None = None
        self.num_samples = 0

    def update(self, aux: dict[str, Tensor], labels: Tensor) -> None:
        if "probs" not in aux:  # dense head: nothing routed
            return
        probs, index = aux["probs"].detach().float(), aux["expert_index"]
        stats = (load_counts(index, self.num_experts), probs.sum(0),
                 expert_class_counts(index, labels, self.num_experts, self.num_classes),
                 normalized_entropy(probs).sum())
        if self.load is None:
            self.load, self.prob_sum, self.expert_class, self.sample_entropy_sum = stats
        else:
            self.load = self.load + stats[0]
            self.prob_sum = self.prob_sum + stats[1]
            self.expert_class = self.expert_class + stats[2]
            self.sample_entropy_sum = self.sample_entropy_sum + stats[3]
        self.num_samples += probs.shape[0]

    def compute(self) -> dict:
        if self.load is None:
            return {}
        return summarize(self.load, self.prob_sum, float(self.sample_entropy_sum), self.num_samples,
                         self.expert_class)
