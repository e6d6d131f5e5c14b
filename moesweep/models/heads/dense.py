"""Dense head: the MLP baseline D → H → C (ReLU, dropout on the hidden layer), H = cfg.hidden."""

from __future__ import annotations

from torch import Tensor, nn

from moesweep.config import HeadCfg


class DenseHead(nn.Module):
    """One MLP; its parameter count is the budget the MoE heads match with ``expert_hidden: auto``."""

    def __init__(self, cfg: HeadCfg, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, num_classes)
        )

    def forward(self, features: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # No gates, so no balance loss; a zero keeps the trainer's `loss + aux["balance_loss"]` uniform.
        return self.net(features), {"balance_loss": features.new_zeros(())}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def active_macs(self) -> int:
        first, last = self.net[0], self.net[3]
        return first.in_features * first.out_features + last.in_features * last.out_features
