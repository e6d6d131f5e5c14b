"""Hessian cost, measured side by side in one run on a small CNN + sparse MoE head (all parameters):

1. HVP time / gradient time on the same model and batch (goal <= 3x on CPU), for the HVP as
   ``compute_sharpness`` runs it on one batch (gradient graph built once, reused) and recomputed;
2. HVPs needed to reach lambda_max at 1e-3 relative error: Lanczos / power iteration (goal <= 0.5).

The reference lambda_max is the top Ritz value of a long Lanczos run (its residual is printed). Lanczos'
count is read from the same run (T's leading m x m block is exactly what m steps would give); power
iteration's from its Rayleigh-quotient history. Both counts are the first step after which the estimate
stays within the tolerance.

    python benchmarks/bench_hessian.py                       # 256 images of 8x8, 1 thread
    python benchmarks/bench_hessian.py --image-size 32 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from moesweep.analysis import lanczos as lz
from moesweep.analysis.hessian import HessianOperator, power_lambda_max
from moesweep.config import BackboneCfg, HeadCfg, TrialCfg
from moesweep.models import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--width", type=int, default=16, help="cnn backbone width")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (gradient and HVP interleaved)")
    p.add_argument("--rtol", type=float, default=1e-3, help="lambda_max relative error target")
    p.add_argument("--ref-iters", type=int, default=100, help="Lanczos steps of the reference run")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def first_within(estimates: list[float], ref: float, rtol: float) -> int | None:
    """1-based index after which every estimate is within rtol of ref (None if never)."""
    ok = [abs(e - ref) <= rtol * abs(ref) for e in estimates]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i + 1
    return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=args.width),
                   head=HeadCfg(kind="sparse", hidden=128, num_experts=args.experts, top_k=args.topk))
    model = build_model(cfg, in_channels=3, image_size=args.image_size, num_classes=10)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    op = HessianOperator(model, [(x, y)], "all")
    print(f"model: cnn(width={args.width}) + sparse(E={args.experts}, k={args.topk}); {op.dim} parameters; "
          f"batch {args.batch} x 3 x {args.image_size} x {args.image_size}; {args.threads} thread(s); "
          f"torch {torch.__version__}")

    v = op.random(gen)
    fresh = HessianOperator(model, [(x, y)], "all", cache_graph=False)
    calls = {"gradient": op.gradient, "HVP (cached gradient graph, the one-batch default)": lambda: op.hvp(v),
             "HVP (forward + both backwards each call)": lambda: fresh.hvp(v)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.repeats + 1):  # interleaved so machine noise hits all alike; round 0 warms up
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print()
    for name, t in ms.items():
        ratio = "" if name == "gradient" else f"   / gradient = {t / ms['gradient']:.2f}x  (goal <= 3x)"
        print(f"{name:52s} {t:8.1f} ms{ratio}")

    ref_run = lz.lanczos(op.hvp, op.random(gen), args.ref_iters)
    ritz = [float(ref_run.ritz(m)[0][0]) for m in range(1, len(ref_run.alphas) + 1)]
    vals, vecs = lz.ritz_vectors(ref_run, 1)
    ref = float(vals[0])
    residual = float((op.hvp(vecs[0]) - ref * vecs[0]).norm())
    power = power_lambda_max(op, rtol=0.0, max_iters=1000, seed=args.seed + 1)
    n_lanczos = first_within(ritz, ref, args.rtol)
    n_power = first_within(power.history, ref, args.rtol)
    print(f"\nreference lambda_max {ref:.6g} (Lanczos {len(ritz)} steps, residual {residual:.2e}); "
          f"power iteration's last estimate {power.history[-1]:.6g}")
    print(f"HVPs to lambda_max at {args.rtol:g} relative error:  Lanczos {n_lanczos}   power {n_power}")
    if n_lanczos and n_power:
        print(f"Lanczos / power = {n_lanczos / n_power:.2f}  (goal <= 0.5)")
    else:
        print("power iteration did not reach the tolerance in 1000 HVPs (gap too small, or |lambda_min| larger)")


if __name__ == "__main__":
    main()
