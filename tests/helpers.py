"""Test helpers shared across the suite: a generated mini CIFAR-10 in the real pickle layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_mini_cifar10(root: str | Path, per_batch: int = 20, n_test: int = 30, bytes_keys: bool = True,
                       seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with 5 x ``per_batch`` train and ``n_test`` test images.

    Same files and dict layout as the original python release: ``data_batch_1..5`` and ``test_batch``
    hold "data" (uint8 [N, 3072], R, G, B planes row-major), "labels", "filenames", "batch_label";
    ``batches.meta`` holds "label_names". ``bytes_keys=True`` mimics how the original Python 2 pickles
    load in Python 3 (b"data"); ``False`` mimics regenerated copies (str keys). Pixels are random, so
    every image is distinct. Returns the ``cifar-10-batches-py`` directory.
    """
    rng = np.random.default_rng(seed)
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    def dump(name: str, d: dict[str, object]) -> None:
        with open(out / name, "wb") as f:
            pickle.dump({key(k): v for k, v in d.items()}, f, protocol=2)

    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        labels = [int(v) for v in rng.integers(0, 10, n)]
        dump(name, {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "labels": labels, "filenames": [f"{name}_{i}.png" for i in range(n)]})
    names = [c.encode() if bytes_keys else c for c in CLASSES]
    dump("batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return out
