"""Soft MoE head (softmax gate, every expert evaluated) and ``MoEHead``, the base shared with sparse.

An MoE head is router + experts + a combine step. The base owns the experts (sized by
``expert_hidden``, "auto" matching the dense head's parameter count, router included), the aux dict
and the cost accounting; subclasses choose the router and how routed rows reach the experts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moesweep.config import HeadCfg
from moesweep.models.heads.experts import ExpertMLPs, auto_expert_hidden, mlp_num_params
from moesweep.models.heads.losses import aux_loss
from moesweep.models.heads.routing import Routing, SoftRouter


class MoEHead(nn.Module):
    """Router + E expert MLPs. Subclasses implement ``combine(x, routing) -> logits [B, C]``."""

    def __init__(self, cfg: HeadCfg, in_dim: int, num_classes: int, router: nn.Module, active_experts: int) -> None:
        super().__init__()
        self.num_experts = cfg.num_experts  # the trainer tells MoE heads from dense by this attribute
        self.router = router
        if cfg.expert_hidden == "auto":
            router_params = sum(p.numel() for p in router.parameters())
            budget = mlp_num_params(in_dim, cfg.hidden, num_classes)
            hidden = auto_expert_hidden(budget, in_dim, num_classes, cfg.num_experts, router_params)
        else:
            hidden = int(cfg.expert_hidden)
        self.experts = ExpertMLPs(cfg.num_experts, in_dim, hidden, num_classes, cfg.dropout)
        self.active_experts = active_experts
        self.balance_kind, self.balance_weight, self.z_loss_weight = (
            cfg.balance_loss, cfg.balance_weight, cfg.z_loss_weight)

    def combine(self, x: Tensor, r: Routing) -> Tensor:
        raise NotImplementedError

    def forward(self, features: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router(features)
        logits = self.combine(features, r)
        aux = {
            "balance_loss": aux_loss(self.balance_kind, r, self.balance_weight, self.z_loss_weight),
            "gates": r.gates,
            "probs": r.probs,
            "expert_index": r.expert_index,
            "router_logits": r.logits,
        }
        return logits, aux

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def active_macs(self) -> int:
        """Per-sample inference MACs: router + the experts each sample actually runs (biases ignored)."""
        return self.router.macs() + self.active_experts * self.experts.macs_per_expert()


class SoftMoEHead(MoEHead):
    """Output Σ_e g_e · expert_e(x) with g = softmax(x W_g / temperature); all E experts run."""

    def __init__(self, cfg: HeadCfg, in_dim: int, num_classes: int) -> None:
        router = SoftRouter(in_dim, cfg.num_experts, cfg.temperature)
        super().__init__(cfg, in_dim, num_classes, router, active_experts=cfg.num_experts)

    def combine(self, x: Tensor, r: Routing) -> Tensor:
        return torch.einsum("be,bec->bc", r.gates, self.experts.forward_all(x))  # [B, C]
