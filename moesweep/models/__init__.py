"""Classifier = backbone (images -> features) + head (features -> logits, aux)."""

from __future__ import annotations

from torch import Tensor, nn

from moesweep.config import TrialCfg
from moesweep.models.backbones import create_backbone
from moesweep.models.heads import create_head


class Classifier(nn.Module):
    """Images [B, C, H, W] -> (logits [B, classes], aux) where aux is the head's dict (balance loss, gates)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.head(self.backbone(x))


def build_model(cfg: TrialCfg, in_channels: int, image_size: int, num_classes: int) -> Classifier:
    """The trial's backbone and head, the head sized to the backbone's ``out_dim``."""
    backbone = create_backbone(cfg.backbone, in_channels, image_size)
    return Classifier(backbone, create_head(cfg.head, backbone.out_dim, num_classes))


def count_params(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not) in ``module``."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["Classifier", "build_model", "count_params", "create_backbone", "create_head"]
