"""Datasets held as tensors on the trial's device, plus batched on-device augmentation.

Following airbench: a dataset is loaded once, converted to float32 and normalized once (per-channel
mean/std of the train split), and kept on the trial's device. Training batches are drawn with
``torch.randperm`` and augmented as whole batches with tensor ops (random crop with zero padding,
horizontal flip); there is no DataLoader and no per-sample PIL transform. Evaluation batches are
plain slices of the stored tensors and are never augmented.

Splits (all fixed by ``data.split_seed``, independent of the trial seed):

- ``cifar10``: the 50,000 training images are split into train/val (``val_size`` images, or a
  fraction when < 1; default 45,000/5,000); the 10,000 test images are the test split.
- ``digits``: scikit-learn's 1,797 8x8 images have no official split; 15% go to test and 15% to val,
  the rest to train (70/15/15). ``val_size`` is used only when it is a fraction (< 1); an image count
  (the default 5000 is sized for CIFAR) is ignored, since no count fits both datasets.
- ``synthetic``: ``synthetic_size`` images per split from fixed class templates plus noise.

``data.subset`` then caps every split at its first N images; since each split is already in a
random order, that is a deterministic random subset, and the capped val/test sets are prefixes of
the full ones.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from moesweep.config import ConfigError, DataCfg

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS_HELD_OUT = 0.15  # digits: fraction of images for test, and for val unless val_size is a fraction


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing; the message says where they go and how to fetch them."""


@dataclass
class Data:
    """A whole dataset on one device: normalized float NCHW images and long labels per split."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    class_names: list[str]
    mean: Tensor  # [C] per-channel train mean (raw pixel units) used to normalize
    std: Tensor  # [C]


# ---------------------------------------------------------------------------------------------
# raw sources: each returns uint8/float arrays NCHW + labels, before splitting


def find_cifar10(root: str | Path) -> Path | None:
    """The ``cifar-10-batches-py`` directory under ``root`` (or ``root`` itself), if complete."""
    root = Path(root).expanduser()
    for cand in (root / CIFAR10_DIR, root):
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if all((cand / n).is_file() for n in names):
            return cand
    return None


def _unpickle(path: Path) -> dict[str, Any]:
    # The original release is a Python 2 pickle whose keys load as bytes (b"data"); regenerated
    # copies use str keys. Normalize both to str.
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_cifar10(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a ``cifar-10-batches-py`` directory: (train_x, train_y, test_x, test_y, class_names).

    Images are uint8 [N, 3, 32, 32]; labels int64. No checksums are verified.
    """

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(directory / name)
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        return x, np.asarray(d["labels"], dtype=np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    names = CIFAR10_CLASSES
    if (directory / "batches.meta").is_file():
        meta = _unpickle(directory / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", names)]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return train_x, train_y, test_x, test_y, names


def _cifar10_source(cfg: DataCfg) -> Path:
    found = find_cifar10(cfg.root)
    if found is None and cfg.download:
        from torchvision.datasets import CIFAR10  # lazy: only this path needs torchvision's downloader

        for train in (True, False):
            CIFAR10(root=str(Path(cfg.root).expanduser()), train=train, download=True)
        found = find_cifar10(cfg.root)
    if found is None:
        raise DatasetNotFoundError(
            f"CIFAR-10 not found under data.root={cfg.root!r}: expected {CIFAR10_DIR}/ with data_batch_1..5 "
            f"and test_batch there (or data.root pointing at that directory); set data.download: true to "
            f"fetch it with torchvision")
    return found


def _synthetic(cfg: DataCfg, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` learnable images per split: smooth class templates plus pixel noise, 3 channels."""
    k, s = cfg.synthetic_classes, cfg.synthetic_image_size
    # Low-frequency templates (4x4 upsampled) so a few-pixel crop shift keeps the class evident.
    templates = F.interpolate(torch.randn(k, 3, 4, 4, generator=gen), size=(s, s), mode="bilinear",
                              align_corners=False)
    y = torch.arange(3 * n) % k  # balanced classes; split order is shuffled below
    x = templates[y] + 0.5 * torch.randn(3 * n, 3, s, s, generator=gen)
    return x, y


# ---------------------------------------------------------------------------------------------
# splitting and normalization


def _val_count(val_size: int | float, pool: int) -> int:
    n = round(val_size * pool) if val_size < 1 else int(val_size)
    if not 1 <= n < pool:
        raise ConfigError(f"data.val_size: {val_size} leaves no training images out of {pool}")
    return n


def _partition(n: int, held_out: list[int], seed: int) -> list[Tensor]:
    """Shuffle ``range(n)`` with ``seed``; return [rest, *held_out parts] as index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in held_out:
        parts.append(perm[start:start + size])
        start += size
    return [perm[start:], *parts]


def _normalize(splits: list[Tensor], device: torch.device | str) -> tuple[list[Tensor], Tensor, Tensor]:
    """Move to ``device``, convert to float32 once, normalize with the first (train) split's stats."""
    # Move before converting: uint8 is a quarter of the bytes to copy.
    xs = [x.to(device).float() for x in splits]
    mean = xs[0].mean(dim=(0, 2, 3))
    std = xs[0].std(dim=(0, 2, 3)).clamp_min(1e-6)
    # In place: a float CIFAR train split is ~550 MB, so no temporaries.
    return [x.sub_(mean[:, None, None]).div_(std[:, None, None]) for x in xs], mean, std


def load_data(cfg: DataCfg, device: torch.device | str = "cpu") -> Data:
    """Load ``cfg.name`` as normalized tensors on ``device``, split and capped as the module doc says."""
    seed = cfg.split_seed
    if cfg.name == "cifar10":
        tx, ty, test_x, test_y, names = read_cifar10(_cifar10_source(cfg))
        train_idx, val_idx = _partition(len(tx), [_val_count(cfg.val_size, len(tx))], seed)
        (test_idx,) = _partition(len(test_x), [], seed)
        x = [torch.from_numpy(tx), torch.from_numpy(test_x)]
        y = [torch.from_numpy(ty), torch.from_numpy(test_y)]
        picks = [(0, train_idx), (0, val_idx), (1, test_idx)]
    elif cfg.name == "digits":
        from sklearn.datasets import load_digits  # lazy: bundled with scikit-learn, no download

        d = load_digits()
        n = len(d.target)
        n_test = round(DIGITS_HELD_OUT * n)
        n_val = _val_count(cfg.val_size, n) if cfg.val_size < 1 else n_test
        train_idx, val_idx, test_idx = _partition(n, [n_val, n_test], seed)
        x = [torch.from_numpy(d.images).float().unsqueeze(1)]  # [N, 1, 8, 8], values 0..16
        y = [torch.from_numpy(d.target).long()]
        names = [str(c) for c in range(10)]
        picks = [(0, train_idx), (0, val_idx), (0, test_idx)]
    else:  # synthetic
        n = cfg.synthetic_size
        sx, sy = _synthetic(cfg, n, torch.Generator().manual_seed(seed))
        train_idx, val_idx, test_idx = _partition(3 * n, [n, n], seed)
        x, y = [sx], [sy]
        names = [f"class{c}" for c in range(cfg.synthetic_classes)]
        picks = [(0, train_idx), (0, val_idx), (0, test_idx)]

    picks = [(src, idx[:cfg.subset]) for src, idx in picks]  # subset=None keeps everything
    xs, mean, std = _normalize([x[src][idx] for src, idx in picks], device)
    ys = [y[src][idx].long().to(device) for src, idx in picks]
    return Data(train_x=xs[0], train_y=ys[0], val_x=xs[1], val_y=ys[1], test_x=xs[2], test_y=ys[2],
                num_classes=len(names), in_channels=xs[0].shape[1], image_size=xs[0].shape[-1],
                name=cfg.name, class_names=names, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------
# batches and augmentation


def augment_batch(x: Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> Tensor:
    """Random crop after zero padding, then random horizontal flip, per image, in one batched pass.

    Args:
        x: [B, C, H, W] normalized images (zero padding is then the dataset's mean colour).
        padding: pixels of zero padding per side; the crop offset is uniform in [0, 2 * padding].
        flip: mirror each image left-right with probability 1/2.
        generator: a torch.Generator on ``x.device`` (determinism for a seed).
    Returns:
        [B, C, H, W] tensor of the same dtype and device; ``x`` itself when there is nothing to do.
    """
    b, c, h, w = x.shape
    out = x
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)  # [B, C, H + 2p, W + 2p]
        dy, dx = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator, device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
        # Two gathers crop every image at its own offset: first rows, then columns.
        out = padded.gather(2, rows.expand(b, c, h, w + 2 * padding))  # [B, C, H, W + 2p]
        out = out.gather(3, cols.expand(b, c, h, w))  # [B, C, H, W]
    if flip:
        mirror = torch.rand(b, generator=generator, device=x.device) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def train_batches(data: Data, batch_size: int, generator: torch.Generator,
                  cfg: DataCfg) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled training batches, augmented iff ``cfg.augment``.

    Every training image appears exactly once; the last batch is kept even when smaller than
    ``batch_size`` (so no image is skipped for a whole epoch).
    """
    n = len(data.train_y)
    perm = torch.randperm(n, generator=generator, device=data.train_y.device)
    for start in range(0, n, batch_size):
        idx = perm[start:start + batch_size]
        x = data.train_x[idx]
        if cfg.augment:
            x = augment_batch(x, cfg.crop_padding, cfg.flip, generator)
        yield x, data.train_y[idx]


def eval_batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive slices (views) of the stored tensors, in order; never augmented."""
    for start in range(0, len(y), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]
