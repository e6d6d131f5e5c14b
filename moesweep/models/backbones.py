"""Feature extractors: ResNet-18 with the CIFAR stem, and a small CNN for CPU runs.

Every backbone maps images [B, C, H, W] to pooled features [B, out_dim] and exposes ``out_dim``, the
head's input width.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from moesweep.config import BackboneCfg


def resnet18(cfg: BackboneCfg, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18, CIFAR stem: 3x3 stride-1 first conv, no max-pool, fc removed (512-d).

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8 before the first
    block; the CIFAR variant keeps full resolution there, as in the MoE-head study. ``cfg.width`` is
    ignored: ResNet-18's widths are fixed.
    """
    from torchvision.models import resnet18 as tv_resnet18  # lazy: only this backbone needs torchvision

    net = tv_resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features  # 512
    net.fc = nn.Identity()  # forward now ends at the flattened global average pool
    return net


class SmallCNN(nn.Module):
    """conv-BN-ReLU blocks of width w, w, 2w, 4w; 2x max-pool after blocks 2-4 while the map is > 2
    pixels (so 8x8 digits still work), then global average pooling. ~0.1 M parameters at w = 32."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for i, c_out in enumerate((width, width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i > 0 and size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)  # [B, out_dim]


def cnn(cfg: BackboneCfg, in_channels: int, image_size: int) -> nn.Module:
    return SmallCNN(in_channels, image_size, cfg.width)


# Keys match BackboneCfg.name's allowed values.
BACKBONES: dict[str, Callable[[BackboneCfg, int, int], nn.Module]] = {"cnn": cnn, "resnet18": resnet18}


def create_backbone(cfg: BackboneCfg, in_channels: int, image_size: int) -> nn.Module:
    """Build ``cfg.name`` for ``in_channels``-channel square images of side ``image_size``."""
    if cfg.name not in BACKBONES:
        raise ValueError(f"backbone.name: unknown backbone {cfg.name!r} (expected one of {', '.join(BACKBONES)})")
    return BACKBONES[cfg.name](cfg, in_channels, image_size)
