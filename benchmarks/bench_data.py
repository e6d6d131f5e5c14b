"""Images/s of on-device batched augmentation vs torchvision per-sample transforms, side by side.

    python benchmarks/bench_data.py [--device cpu|cuda] [--threads 1] [--batch-size 512]

Both pipelines read the same CIFAR-10 training images (regenerated with ../shared/data/make_cifar10.py
into a temp dir; random uint8 images in the same layout when that script is absent) and produce
normalized, randomly cropped (padding 4) and flipped float batches:

- moesweep: ``load_data`` once (tensors on the device, normalized once), then ``train_batches``
  (randperm + gather crops + where flips on whole batches);
- torchvision: a Dataset of uint8 HWC arrays with RandomCrop(32, padding=4), RandomHorizontalFlip,
  ToTensor, Normalize per image, through a DataLoader with num_workers 0 and 2.

Goal: the on-device pipeline is >= 10x the per-sample one. Prints both rates and the ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MAKE_CIFAR = ROOT.parent / "shared" / "data" / "make_cifar10.py"
sys.path.insert(0, str(ROOT))  # for tests.helpers when run as a script

from moesweep.config import DataCfg  # noqa: E402
from moesweep.data import load_data, read_cifar10, train_batches  # noqa: E402


def prepare_cifar(dest: Path) -> str:
    """Write a cifar-10-batches-py under ``dest``; return a description of what was written."""
    if MAKE_CIFAR.is_file():
        done = subprocess.run([sys.executable, str(MAKE_CIFAR), str(dest)], capture_output=True, text=True)
        if done.returncode == 0:
            return "CIFAR-10 regenerated from shared/data"
    from tests.helpers import write_mini_cifar10

    write_mini_cifar10(dest, per_batch=10_000, n_test=10_000)
    return "random uint8 images (make_cifar10.py unavailable)"


class PerSampleDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def rate_on_device(root: Path, device: str, batch_size: int) -> tuple[float, float, int]:
    """(images/s over one augmented epoch, seconds for the one-time load, images per epoch)."""
    t0 = time.perf_counter()
    cfg = DataCfg(name="cifar10", root=str(root), augment=True, crop_padding=4, flip=True)
    data = load_data(cfg, device)
    load_s = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in zip(range(3), train_batches(data, batch_size, gen, cfg)):  # warm-up (CUDA kernels, caches)
        pass
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in train_batches(data, batch_size, gen, cfg))
    sync()
    return n / (time.perf_counter() - t0), load_s, n


def rate_per_sample(images_hwc: np.ndarray, labels: np.ndarray, batch_size: int, workers: int,
                    n_images: int) -> float:
    """Images/s of the torchvision per-sample pipeline over ``n_images`` (worker start-up included)."""
    import torchvision.transforms as T

    mean = tuple(images_hwc.reshape(-1, 3).mean(0) / 255)
    std = tuple(images_hwc.reshape(-1, 3).std(0) / 255)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PerSampleDataset(images_hwc, labels, transform),
                                         batch_size=batch_size, shuffle=True, num_workers=workers)
    t0, n = time.perf_counter(), 0
    for _, y in loader:
        n += len(y)
        if n >= n_images:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a per-core comparison)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--per-sample-images", type=int, default=10_240, help="images timed per DataLoader run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        source = prepare_cifar(Path(tmp))
        ours, load_s, n = rate_on_device(Path(tmp), args.device, args.batch_size)
        train_x, train_y, *_ = read_cifar10(Path(tmp) / "cifar-10-batches-py")
    images_hwc = np.ascontiguousarray(train_x.transpose(0, 2, 3, 1))  # PIL wants H, W, C

    print(f"data: {source}; device {args.device}; torch threads {args.threads}; batch {args.batch_size}")
    print(f"on-device batched (moesweep)      {ours:12,.0f} img/s   (epoch of {n:,} images; "
          f"one-time load + normalize {load_s:.1f} s)")
    for workers in (0, 2):
        theirs = rate_per_sample(images_hwc, train_y, args.batch_size, workers, args.per_sample_images)
        print(f"torchvision per-sample, workers={workers} {theirs:12,.0f} img/s   ratio {ours / theirs:6.1f}x")


if __name__ == "__main__":
    main()
