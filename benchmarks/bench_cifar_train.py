"""Real CIFAR-10 on CPU: every head kind trained on the same ``cnn`` backbone and data, side by side.

    python benchmarks/bench_cifar_train.py                          # 10k images, 5 epochs, 4 heads: ~8 min
    python benchmarks/bench_cifar_train.py --epochs 2 --heads dense,sparse-k1
    python benchmarks/bench_cifar_train.py --data-dir /scratch/cifar10   # where the batches are (or go)

Evidence that the heads learn real images, not a speed race: ``moesweep.train.train_trial`` in this
process (no Ray) with the same backbone (cnn width 32), optimizer (SGD 0.9, lr 0.05 cosine, batch 128),
augmentation (random crop 4 + flip) and data for each head -- dense, soft MoE, sparse top-1 and sparse
top-2 (8 experts, ``expert_hidden: auto``: the dense head's parameter budget). Printed per head:
validation and test accuracy (test on the best-validation weights), parameters, active head MACs and
training images/s (mean over the epochs after the first). Goal: every head's test accuracy is at least
``--goal`` (default 0.40, 4x chance on 10 classes).

Data: the CIFAR-10 batches are written by ``../shared/data/make_cifar10.py`` (about 20 s) into
``--data-dir``, a cache outside the repository, and reused on later runs. The data is not part of the
project and must never be committed: a ``--data-dir`` inside the repository is refused. Without the
shared data (and no cached copy) the script exits with a message saying so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from moesweep.config import TrialCfg, from_dict
from moesweep.data import Data, find_cifar10, load_data
from moesweep.train import train_trial

ROOT = Path(__file__).resolve().parents[1]
MAKE_CIFAR = ROOT.parent / "shared" / "data" / "make_cifar10.py"
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moesweep" / "cifar10"
HEADS: dict[str, dict[str, Any]] = {  # name -> head overrides
    "dense": {"kind": "dense"},
    "soft": {"kind": "soft"},
    "sparse-k1": {"kind": "sparse", "top_k": 1},
    "sparse-k2": {"kind": "sparse", "top_k": 2},
}


def ensure_cifar(data_dir: Path) -> Path:
    """The ``cifar-10-batches-py`` directory under ``data_dir``, generated from shared/data if absent."""
    data_dir = data_dir.expanduser().resolve()
    if data_dir == ROOT or ROOT in data_dir.parents:
        sys.exit(f"--data-dir {data_dir} is inside the repository; CIFAR-10 must never be committed: "
                 f"use a cache or temp directory outside {ROOT}")
    found = find_cifar10(data_dir)
    if found is not None:
        return found
    if not MAKE_CIFAR.is_file():
        sys.exit(f"CIFAR-10 is not available: {MAKE_CIFAR} (the shared data) is absent and {data_dir} holds no "
                 f"cifar-10-batches-py. Put the shared data beside the repository or pass --data-dir.")
    print(f"writing CIFAR-10 batches to {data_dir} with {MAKE_CIFAR} ...", flush=True)
    subprocess.run([sys.executable, str(MAKE_CIFAR), str(data_dir)], check=True, capture_output=True)
    found = find_cifar10(data_dir)
    if found is None:
        sys.exit(f"{MAKE_CIFAR} ran but {data_dir} holds no complete cifar-10-batches-py")
    return found


def trial_cfg(args: argparse.Namespace, root: Path, head: dict[str, Any]) -> TrialCfg:
    return from_dict(TrialCfg, {
        "data": {"name": "cifar10", "root": str(root), "subset": args.train, "val_size": args.eval_size,
                 "augment": True, "crop_padding": 4, "flip": True},
        "backbone": {"name": "cnn", "width": args.width},
        "head": {"hidden": 512, "num_experts": args.experts, "balance_loss": "kl_uniform", "balance_weight": 0.01,
                 **head},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "schedule": "cosine",
                  "optimizer": "sgd", "weight_decay": 5e-4, "threads": args.threads, "device": "cpu"},
        "seed": args.seed,
    })


def load_splits(cfg: TrialCfg, eval_size: int) -> Data:
    """``data.subset`` caps each split at the train size; the test split is cut to ``eval_size`` images
    too (a prefix of the shuffled test set, as ``subset`` itself would give)."""
    data = load_data(cfg.data, "cpu")
    return dataclasses.replace(data, test_x=data.test_x[:eval_size], test_y=data.test_y[:eval_size])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="cache for cifar-10-batches-py")
    p.add_argument("--heads", default=",".join(HEADS), help=f"comma-separated subset of {', '.join(HEADS)}")
    p.add_argument("--train", type=int, default=10_000, help="training images (data.subset)")
    p.add_argument("--eval-size", type=int, default=2000, help="validation and test images each")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--width", type=int, default=32, help="cnn width")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--goal", type=float, default=0.40, help="test accuracy every head must reach")
    args = p.parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",")]
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        p.error(f"--heads: unknown {', '.join(unknown)} (expected {', '.join(HEADS)})")

    root = ensure_cifar(args.data_dir)
    torch.set_num_threads(args.threads)
    data = load_splits(trial_cfg(args, root, HEADS[heads[0]]), args.eval_size)
    print(f"# bench_cifar_train: CIFAR-10 from {root}; {len(data.train_y)}/{len(data.val_y)}/{len(data.test_y)} "
          f"train/val/test, cnn width {args.width}, batch {args.batch_size}, lr {args.lr} cosine, augment on, "
          f"{args.epochs} epochs, {args.threads} threads, seed {args.seed}; load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in heads:
        cfg = trial_cfg(args, root, HEADS[name])
        t0 = time.perf_counter()
        res = train_trial(cfg, data, progress=lambda m, n=name: print(
            f"  {n:<9} epoch {m['epoch'] + 1}/{args.epochs}  loss {m['train_loss']:.3f}  train {m['train_acc']:.3f}  "
            f"val {m['val_acc']:.3f}  {m['images_per_s']:.0f} img/s", flush=True))
        rates = [h["images_per_s"] for h in res.history]
        rows.append({"head": name, "params": res.params, "head_params": res.head_params,
                     "macs": res.active_head_macs, "best_val": res.best_val_acc, "best_epoch": res.best_epoch + 1,
                     "final_val": res.final_val_acc, "test": res.test_acc, "train": res.train_acc,
                     "img_s": statistics.fmean(rates[1:] if len(rates) > 1 else rates),
                     "wall_s": time.perf_counter() - t0})

    print(f"\n{'head':<10} {'params':>8} {'head_p':>8} {'head_MACs':>9} {'train':>6} {'best_val':>8} {'@ep':>3} "
          f"{'final_val':>9} {'test':>6} {'test/goal':>9} {'img/s':>6} {'wall_s':>7}")
    for r in rows:
        print(f"{r['head']:<10} {r['params']:>8,} {r['head_params']:>8,} {r['macs']:>9,} {r['train']:6.3f} "
              f"{r['best_val']:8.3f} {r['best_epoch']:>3} {r['final_val']:9.3f} {r['test']:6.3f} "
              f"{r['test'] / args.goal:9.2f} {r['img_s']:6.0f} {r['wall_s']:7.1f}")
    worst = min(rows, key=lambda r: r["test"])
    print(f"lowest test accuracy: {worst['head']} {worst['test']:.3f} = {worst['test'] / args.goal:.2f}x the goal "
          f"of {args.goal:.2f} ({'met' if worst['test'] >= args.goal else 'NOT met'}); chance is "
          f"{1 / data.num_classes:.2f}")
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
