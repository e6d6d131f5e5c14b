"""Head latency through ``analysis.latency.measure_latency``: sparse `batched` vs `naive` vs soft (and dense)
at E=16, k=2 across batch sizes, with counted FLOPs, all measured in one run.

Heads use `expert_hidden: auto` (the dense head's parameter budget), features are D=512 (ResNet-18's
width). Printed: median ms per head, naive/batched and soft/batched latency ratios, and the counted
FLOPs of each path relative to the analytic active FLOPs (batched pads groups; soft runs every expert).

    python benchmarks/bench_latency.py                       # CPU, 1 thread
    python benchmarks/bench_latency.py --threads 2 --batch-sizes 1,128,1024 --device cuda
"""

from __future__ import annotations

import argparse

import torch

from moesweep.analysis.latency import DEFAULT_BATCH_SIZES, Timing, measure_latency
from moesweep.config import HeadCfg
from moesweep.models import Classifier
from moesweep.models.heads import create_head


class Features(torch.nn.Module):
    """Stand-in backbone: only ``out_dim`` is read, since only the head scope is timed."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=lambda t: [int(v) for v in t.split(",")],
                   default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--in-dim", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=1.0, help="time budget per measured point")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    timing = Timing(warmup=3, min_repeats=10, max_repeats=200, budget_s=args.budget_s)
    rows: dict[tuple[str, int], dict] = {}
    for kind in ("dense", "soft", "sparse"):
        torch.manual_seed(0)
        head = create_head(HeadCfg(kind=kind, hidden=args.hidden, num_experts=args.experts, top_k=args.topk),
                           args.in_dim, args.classes)
        model = Classifier(Features(args.in_dim), head).to(args.device)
        for r in measure_latency(model, batch_sizes=args.batch_sizes, device=args.device, threads=args.threads,
                                 scopes=("head",), timing=timing, head_name=kind):
            rows[r["dispatch"] or kind, r["batch_size"]] = r
    first = next(iter(rows.values()))
    print(f"head latency, E={args.experts} k={args.topk} D={args.in_dim} C={args.classes}, "
          f"{first['device']}, {first['threads']} thread(s), torch {first['torch_version']}")
    print("median ms (p10-p90 in the records); FLOPs as counted / analytic active\n")
    names = ("dense", "soft", "naive", "batched")
    print(f"{'B':>5} " + " ".join(f"{n:>9}" for n in names) + f" {'naive/bat':>9} {'soft/bat':>9}"
          + " ".join(f" {n + ' fl':>10}" for n in names[1:]))
    for b in args.batch_sizes:
        r = {n: rows[n, b] for n in names}
        ms = {n: r[n]["median_ms"] for n in names}
        fl = {n: r[n]["flops"] / r[n]["active_flops"] for n in names[1:]}
        print(f"{b:>5} " + " ".join(f"{ms[n]:>9.3f}" for n in names)
              + f" {ms['naive'] / ms['batched']:>9.2f} {ms['soft'] / ms['batched']:>9.2f}"
              + " ".join(f" {fl[n]:>10.2f}" for n in names[1:]))


if __name__ == "__main__":
    main()
