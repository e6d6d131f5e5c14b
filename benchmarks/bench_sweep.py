"""What the Ray Tune sweep costs a trial: throughput inside a sweep vs plain training, and the start
overhead of each trial after the first, measured side by side in one run.

    python benchmarks/bench_sweep.py                    # both parts, small defaults (~4 minutes, 2 cores)
    python benchmarks/bench_sweep.py --part throughput --rounds 3 --epochs 6
    python benchmarks/bench_sweep.py --part overhead --configs 12

a. throughput: one configuration (synthetic 32x32 RGB data, ``cnn`` backbone, sparse head, 1 seed,
   ``--epochs`` epochs) trained (i) by ``train_trial`` in a fresh subprocess with one torch thread and
   (ii) as the only trial of a sweep (``moesweep launch`` in a subprocess; local Ray, ``resources:
   {cpu: 1}``, so the trainable gives torch one thread). Images/s is the training-loop rate the trainer
   records per epoch, averaged over the epochs after the first (the first pays allocator and cache
   warm-up on both sides). Runs are interleaved plain, sweep, plain[, sweep, plain ...] so drift in
   the machine's load shows as disagreement between neighbours; each sweep is divided by the mean of
   the plain runs on either side of it. Ray runs its workers at nice 15, so the plain runs get the
   same niceness by default (``--plain-nice 0``: as a user would start them); otherwise, on a shared
   host, the comparison measures the OS scheduler's priorities, not the sweep. Goal: sweep / plain
   >= 0.95.

b. overhead: ``--configs`` tiny configurations of 1 epoch each, run one at a time (``max_concurrent:
   1``, ``resources: {cpu: 1}``; Tune reuses the actor). For consecutive trials the start overhead is
   next ``started_at`` - previous last ``reported_at`` (Tune's bookkeeping, checkpoint persistence,
   actor reset) plus the next trial's ``setup_s`` (data from the object store, model build). Goal: the
   median and the max over trials 2..N are <= 0.5 s.

Drivers run as subprocesses, as a user runs them (Ray keeps process-wide state); nothing here stops
Ray processes it did not start. Helpers below (``write_space``, ``launch_sweep``, ``tune_reports``)
also serve ``bench_cluster.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOAL_THROUGHPUT = 0.95  # sweep images/s / plain images/s
GOAL_OVERHEAD_S = 0.5  # seconds between trials on one reused actor
# Ray lowers its worker processes' priority (nice 15 unless RAY_worker_niceness says otherwise), so on a
# shared host a trial inside a sweep yields to neighbours that a plain nice-0 run would compete with.
RAY_WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", 15))

# Runs train_trial on a config (JSON in argv[1]) with one torch thread; prints the per-epoch images/s.
_PLAIN_SNIPPET = """
import json, sys, torch
torch.set_num_threads(1)
from moesweep.config import TrialCfg, from_dict
from moesweep.data import load_data
from moesweep.train import train_trial
cfg = from_dict(TrialCfg, json.loads(sys.argv[1]))
res = train_trial(cfg, load_data(cfg.data, "cpu"))
print(json.dumps([h["images_per_s"] for h in res.history]))
"""


# ------------------------------------------------------------------------------------- shared helpers


def write_space(directory: Path, name: str, base: dict[str, Any], search: dict[str, Any],
                **extra: Any) -> Path:
    """A one-seed, grid, FIFO space with 1 CPU per trial; ``extra`` overrides top-level keys."""
    space = {"name": name, "base": base, "search": search, "seeds": [0], "search_alg": "grid",
             "scheduler": {"kind": "fifo"}, "resources": {"cpu": 1, "gpu": 0},
             "analysis_resources": {"cpu": 1, "gpu": 0}, **extra}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def launch_sweep(space: Path, storage: Path, address: str | None = None, env: dict[str, str] | None = None,
                 timeout_s: float = 900) -> float:
    """``moesweep launch --no-analysis`` in a subprocess; returns its wall seconds, exits on failure.

    Without ``address`` the driver starts a private local Ray (``RAY_ADDRESS`` is dropped so it cannot
    join someone else's cluster by accident)."""
    cmd = [sys.executable, "-m", "moesweep.cli", "launch", "--space", str(space), "--storage", str(storage),
           "--no-analysis"]
    if address:
        cmd += ["--address", address]
    else:
        env = {k: v for k, v in (env or os.environ).items() if k != "RAY_ADDRESS"}
    env = {**(env or os.environ), "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        sys.exit(f"moesweep launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def tune_reports(experiment: Path) -> list[list[dict[str, Any]]]:
    """Every Tune trial's reports (``cfg_*/result.json``, one JSON line per report), in start order."""
    trials = []
    for path in experiment.glob("cfg_*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            trials.append(lines)
    if not trials:
        sys.exit(f"{experiment}: no cfg_*/result.json written")
    return sorted(trials, key=lambda t: t[0]["started_at"])


def mean_after_first(rates: list[float]) -> float:
    """Mean of per-epoch rates without the first epoch (warm-up), or the only one there is."""
    return statistics.fmean(rates[1:] if len(rates) > 1 else rates)


# ------------------------------------------------------------------------------------------- part a


def throughput_base(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": {"name": "synthetic", "synthetic_size": args.images, "synthetic_classes": 10,
                 "synthetic_image_size": 32},
        "backbone": {"name": "cnn", "width": args.width},
        "head": {"kind": "sparse", "hidden": 128, "num_experts": 4, "top_k": 1},
        "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "schedule": "cosine"},
    }


def start_plain(base: dict[str, Any], nice: int = RAY_WORKER_NICENESS) -> subprocess.Popen:
    """``train_trial`` on the sweep's base config (seed 0, one torch thread) in a fresh subprocess at
    scheduling priority ``nice`` (default: the one Ray gives its workers, so neighbours' load slows
    both sides alike)."""
    cfg = {**base, "train": {**base["train"], "threads": 1}, "seed": 0}
    return subprocess.Popen([sys.executable, "-c", _PLAIN_SNIPPET, json.dumps(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice))


def finish_plain(proc: subprocess.Popen) -> list[float]:
    """Per-epoch images/s printed by a ``start_plain`` process; exits on failure."""
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        sys.exit(f"plain train_trial failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def plain_rates(base: dict[str, Any], nice: int = RAY_WORKER_NICENESS) -> list[float]:
    return finish_plain(start_plain(base, nice))


def sweep_rates(base: dict[str, Any], tmp: Path, tag: str) -> tuple[list[float], int]:
    """Per-epoch images/s of the sweep's only trial (epochs.parquet) and the threads it ran with."""
    import pandas as pd

    name = f"throughput_{tag}"
    space = write_space(tmp, name, base, {"head.kind": {"grid": ["sparse"]}}, max_concurrent=1)
    launch_sweep(space, tmp / f"store_{tag}")
    epochs = pd.read_parquet(tmp / f"store_{tag}" / name / "epochs.parquet").sort_values("epoch")
    threads = tune_reports(tmp / f"store_{tag}" / name)[0][-1]["threads"]
    return epochs["images_per_s"].tolist(), int(threads)


def run_throughput(args: argparse.Namespace, tmp: Path) -> None:
    base = throughput_base(args)
    print(f"\n## a. throughput: sweep trial vs plain train_trial (1 thread each); synthetic 32x32, "
          f"{args.images} train images, cnn width {args.width}, sparse E=4 k=1, {args.epochs} epochs; "
          f"nice: Ray workers {RAY_WORKER_NICENESS}, plain runs {args.plain_nice}")
    print(f"{'run':<4} {'side':<9} {'load':>5}  {'img/s per epoch':<36} {'mean(epochs 2..)':>16}")
    plain: list[float] = []
    sweeps: list[float] = []
    for i in range(2 * args.rounds + 1):
        load = os.getloadavg()[0]  # 1-minute load average before the run: how busy the machine was
        if i % 2 == 0:
            rates, side = plain_rates(base, args.plain_nice), "plain"
        else:
            (rates, threads), side = sweep_rates(base, tmp, str(i)), "sweep"
            side += f"({threads}t)"
        m = mean_after_first(rates)
        (plain if i % 2 == 0 else sweeps).append(m)
        print(f"{i + 1:<4} {side:<9} {load:5.1f}  {' '.join(f'{r:7.0f}' for r in rates):<36} {m:16.0f}", flush=True)
    ratios = [s / statistics.fmean(plain[j:j + 2]) for j, s in enumerate(sweeps)]
    for j, r in enumerate(ratios):
        print(f"sweep run {2 * j + 2} / mean(plain runs {2 * j + 1}, {2 * j + 3}): {r:.3f}")
    spread = (max(plain) - min(plain)) / statistics.fmean(plain)
    ratio = statistics.fmean(ratios)
    print(f"plain runs spread (max-min)/mean: {spread:.1%} (the noise floor of this comparison)")
    print(f"throughput ratio sweep/plain: {ratio:.3f} (goal >= {GOAL_THROUGHPUT}: "
          f"{'met' if ratio >= GOAL_THROUGHPUT else 'NOT met'})")


# ------------------------------------------------------------------------------------------- part b


def start_overheads(trials: list[list[dict[str, Any]]]) -> list[dict[str, float]]:
    """For trials 2..N in start order: gap after the previous trial's last report, and setup time."""
    rows = []
    for prev, nxt in zip(trials, trials[1:]):
        gap = nxt[0]["started_at"] - prev[-1]["reported_at"]
        rows.append({"gap_s": gap, "setup_s": nxt[0]["setup_s"], "overhead_s": gap + nxt[0]["setup_s"]})
    return rows


def run_overhead(args: argparse.Namespace, tmp: Path) -> None:
    base = {
        "data": {"name": "synthetic", "synthetic_size": 96, "synthetic_classes": 4, "synthetic_image_size": 8},
        "backbone": {"name": "cnn", "width": 4},
        "head": {"kind": "dense", "hidden": 32},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "schedule": "cosine", "eval_batch_size": 256},
    }
    lrs = [round(0.01 * (i + 1), 3) for i in range(args.configs)]  # distinct configurations, same cost
    space = write_space(tmp, "overhead", base, {"train.lr": {"grid": lrs}}, max_concurrent=1)
    wall = launch_sweep(space, tmp / "store_overhead")
    trials = tune_reports(tmp / "store_overhead" / "overhead")
    rows = start_overheads(trials)
    print(f"\n## b. per-trial start overhead: {len(trials)} tiny 1-epoch configurations, max_concurrent 1, "
          f"cpu 1, reuse_actors (launch wall {wall:.1f} s)")
    print(f"{'trial':>5} {'gap_s':>8} {'setup_s':>8} {'overhead_s':>10}   (trial 1 setup_s "
          f"{trials[0][0]['setup_s']:.3f})")
    for i, r in enumerate(rows, start=2):
        print(f"{i:>5} {r['gap_s']:8.3f} {r['setup_s']:8.3f} {r['overhead_s']:10.3f}")
    over = [r["overhead_s"] for r in rows]
    med, worst = statistics.median(over), max(over)
    verdict = "met" if worst <= GOAL_OVERHEAD_S else "median met, max NOT" if med <= GOAL_OVERHEAD_S else "NOT met"
    print(f"start overhead over trials 2..{len(trials)}: median {med:.3f} s, max {worst:.3f} s "
          f"(goal <= {GOAL_OVERHEAD_S} s: {verdict}); median/goal {med / GOAL_OVERHEAD_S:.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("throughput", "overhead", "both"), default="both")
    p.add_argument("--rounds", type=int, default=2, help="sweep runs in part a (each between two plain runs)")
    p.add_argument("--epochs", type=int, default=4, help="part a: epochs per run")
    p.add_argument("--images", type=int, default=2048, help="part a: synthetic images per split")
    p.add_argument("--width", type=int, default=16, help="part a: cnn width")
    p.add_argument("--plain-nice", type=int, default=RAY_WORKER_NICENESS,
                   help="part a: niceness of the plain runs; the default matches Ray's workers (like with "
                        "like on a shared host), 0 is a plain run as a user starts it")
    p.add_argument("--configs", type=int, default=8, help="part b: configurations run one after another")
    args = p.parse_args(argv)
    print(f"# bench_sweep; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        if args.part in ("throughput", "both"):
            run_throughput(args, Path(tmp))
        if args.part in ("overhead", "both"):
            run_overhead(args, Path(tmp))
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
