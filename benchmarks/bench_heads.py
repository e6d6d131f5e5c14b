"""Head-only latency: sparse `batched` vs sparse `naive` dispatch vs soft MoE vs dense, side by side.

For every (mode, B, E, k) the four heads are timed in interleaved rounds (dense, soft, naive, batched,
dense, ...) so machine noise hits all of them alike; the table shows medians in milliseconds and the
naive/batched ratio. "infer" is eval mode under no_grad, "train" is a training-mode forward + backward
(gate noise on). Heads use `expert_hidden: auto`, i.e. the same parameter budget as the dense head.

    python benchmarks/bench_heads.py                 # full grid, 1 thread, both modes
    python benchmarks/bench_heads.py --threads 2 --mode infer --batch-sizes 1024 --experts 16 --topk 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from moesweep.config import HeadCfg
from moesweep.models.heads import create_head

HEAD_NAMES = ("dense", "soft", "naive", "batched")
GOAL = {"batch": 1024, "experts": 16, "k": 2, "ratio": 3.0}  # the target point


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=_ints, default=[1, 32, 256, 1024])
    p.add_argument("--experts", type=_ints, default=[8, 16, 64])
    p.add_argument("--topk", type=_ints, default=[1, 2])
    p.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    p.add_argument("--in-dim", type=int, default=512, help="feature width D (ResNet-18: 512)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=512, help="dense width, also the MoE parameter budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=0.25, help="approximate seconds per head per row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: this thread's CPU time, steadier on a shared machine (1 thread, CPU device only)")
    return p.parse_args(argv)


def build_heads(args: argparse.Namespace, experts: int, k: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    make = lambda kind: create_head(  # noqa: E731 - one-line factory for the three kinds
        HeadCfg(kind=kind, hidden=args.hidden, num_experts=experts, top_k=k), args.in_dim, args.classes
    ).to(args.device)
    sparse = make("sparse")  # one module serves both dispatches: same weights, switched per call
    return {"dense": make("dense"), "soft": make("soft"), "naive": sparse, "batched": sparse}


def time_call(head: torch.nn.Module, name: str, x: torch.Tensor, train: bool, clock=time.perf_counter) -> float:
    """Seconds for one forward (infer) or forward + backward (train)."""
    if name in ("naive", "batched"):
        head.dispatch = name
    head.train(train)
    head.zero_grad(set_to_none=True)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = clock()
    with torch.set_grad_enabled(train):
        logits, aux = head(x)
        if train:
            (logits.sum() + aux["balance_loss"]).backward()
    sync()
    return clock() - start


def measure_row(heads: dict[str, torch.nn.Module], x: torch.Tensor, train: bool, budget_s: float,
                clock=time.perf_counter) -> dict[str, float]:
    """Median milliseconds per head, rounds interleaved across heads."""
    for name, head in heads.items():  # warm-up, and a first cost estimate to size the rounds
        time_call(head, name, x, train, clock)
    first = sum(time_call(head, name, x, train, clock) for name, head in heads.items())
    rounds = int(min(200, max(5, budget_s * len(heads) / max(first, 1e-6))))
    samples: dict[str, list[float]] = {name: [] for name in heads}
    for _ in range(rounds):
        for name, head in heads.items():
            samples[name].append(time_call(head, name, x, train, clock))
    return {name: 1e3 * statistics.median(v) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        raise SystemExit("--clock cpu measures one CPU thread: use it with --threads 1 --device cpu")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    print(f"# head latency, median ms; D={args.in_dim} C={args.classes} dense hidden={args.hidden}; "
          f"threads={torch.get_num_threads()} device={args.device} clock={args.clock} torch={torch.__version__}")
    print(f"{'mode':>5} {'B':>5} {'E':>3} {'k':>2} {'H_e':>4} | " + " ".join(f"{n:>9}" for n in HEAD_NAMES)
          + " | naive/batched")
    results = {}
    for mode in modes:
        for experts in args.experts:
            for k in (k for k in args.topk if k <= experts):
                heads = build_heads(args, experts, k)
                for batch in args.batch_sizes:
                    x = torch.randn(batch, args.in_dim, device=args.device)
                    ms = measure_row(heads, x, mode == "train", args.budget_s, clock)
                    ratio = ms["naive"] / ms["batched"]
                    results[(mode, batch, experts, k)] = ratio
                    print(f"{mode:>5} {batch:>5} {experts:>3} {k:>2} {heads['naive'].experts.hidden:>4} | "
                          + " ".join(f"{ms[n]:>9.3f}" for n in HEAD_NAMES) + f" | {ratio:6.2f}x", flush=True)
    for mode in modes:
        key = (mode, GOAL["batch"], GOAL["experts"], GOAL["k"])
        if key in results:
            verdict = "met" if results[key] >= GOAL["ratio"] else "NOT met"
            print(f"naive/batched at B={key[1]}, E={key[2]}, k={key[3]} ({mode}): {results[key]:.2f}x "
                  f"(goal >= {GOAL['ratio']:.0f}x: {verdict})")
    return results


if __name__ == "__main__":
    main()
