"""Trials per hour of one sweep on a 2-node loopback Ray cluster vs one node, measured side by side.

    python benchmarks/bench_cluster.py                  # 8 configurations x 1 seed, 2 epochs (~3-4 minutes)
    python benchmarks/bench_cluster.py --rounds 2 --configs 6 --epochs 3

Three clusters, each a real multi-node Ray on 127.0.0.1 with token auth (``tests/ray_cluster.py``):

- ``1 node x 1 CPU``  LoopbackCluster(num_workers=0, cpus_per_node=1) -- the baseline;
- ``2 nodes x 1 CPU`` LoopbackCluster(num_workers=1, cpus_per_node=1) -- what the sweep gains from a
  second node (one trial per node at a time);
- ``1 node x 2 CPUs`` LoopbackCluster(num_workers=0, cpus_per_node=2) -- the same two trial slots on
  one node, to separate the cost of being two nodes from the cost of sharing the host's cores.

Each runs the same sweep (``moesweep launch --address ... --no-analysis`` in a subprocess with the
cluster's auth environment, its own ``--storage``). Trials/hour = trials / (last ``reported_at`` - first
``started_at`` over all Tune trials): the span in which trials run, without Ray's and the driver's
start-up. Goal: 2 nodes / 1 node x 1 CPU >= 1.8.

The loopback "nodes" share this host's cores, so the speed-up can be no larger than the parallelism
the host has free. Each round therefore first measures that capacity with the same trial outside Ray:
images/s of two plain ``train_trial`` processes at once (1 thread each, at the niceness Ray gives its
workers) / images/s of one alone (2.0 on an idle 2-core host). The cluster's speed-up divided by that
capacity is the share of the available parallelism the sweep turned into trials. With ``--rounds`` > 1 everything repeats in turn,
so load drift on a shared machine shows as disagreement between rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_sweep beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # ray_cluster (LoopbackCluster)

from bench_sweep import (finish_plain, launch_sweep, mean_after_first, plain_rates,  # noqa: E402
                         start_overheads, start_plain, tune_reports, write_space)
from ray_cluster import LoopbackCluster  # noqa: E402

GOAL = 1.8  # 2 nodes x 1 CPU vs 1 node x 1 CPU
SETUPS = {"1 node x 1 CPU": (0, 1), "2 nodes x 1 CPU": (1, 1), "1 node x 2 CPUs": (0, 2)}  # workers, cpus
BASELINE, CLUSTER, ONE_NODE_2CPU = "1 node x 1 CPU", "2 nodes x 1 CPU", "1 node x 2 CPUs"


def sweep_base(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": {"name": "synthetic", "synthetic_size": args.images, "synthetic_classes": 4,
                 "synthetic_image_size": 32},
        "backbone": {"name": "cnn", "width": 16},
        "head": {"kind": "sparse", "hidden": 64, "num_experts": 4, "top_k": 1},
        "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "schedule": "cosine"},
    }


def host_capacity(base: dict[str, Any]) -> float:
    """Images/s of two plain trials run at once / images/s of one alone (one torch thread each)."""
    alone = mean_after_first(plain_rates(base))
    pair = [start_plain(base) for _ in range(2)]
    return sum(mean_after_first(finish_plain(p)) for p in pair) / alone


def cpu_seconds(pids: set[int]) -> dict[int, tuple[str, float]]:
    """pid -> (role, user + system CPU seconds so far); role "trial" for Tune's trial actors, else "ray"."""
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # exited since the snapshot
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        ticks = int(fields[11]) + int(fields[12])  # stat fields 14 (utime) and 15 (stime)
        out[pid] = ("trial" if "ray::ImplicitFunc" in cmdline else "ray", ticks / os.sysconf("SC_CLK_TCK"))
    return out


def measure(setup: str, space: Path, storage: Path) -> dict[str, float]:
    """Run the sweep on a fresh cluster of the given shape; trials/hour and where the time went."""
    workers, cpus = SETUPS[setup]
    load = os.getloadavg()[0]  # 1-minute load average before the run: how busy the machine was
    with LoopbackCluster(num_workers=workers, cpus_per_node=cpus) as cluster:
        before, driver0 = cpu_seconds(cluster.pids()), resource.getrusage(resource.RUSAGE_CHILDREN)
        # The job's workers exit with the driver, so their CPU time is read while they live: sampled
        # twice a second, the last reading of each process stands for its total.
        last, done = dict(before), threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                last.update(cpu_seconds(cluster.pids()))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wall = launch_sweep(space, storage, address=cluster.address, env=cluster.env)
        finally:
            done.set()
            sampler.join()
        last.update(cpu_seconds(cluster.pids()))
        driver1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds spent during the launch: in trial actors, in Ray's other processes, in the driver.
    cpu = {"trial": 0.0, "ray": 0.0}
    for pid, (role, sec) in last.items():
        cpu[role] += sec - before.get(pid, (role, 0.0))[1]
    cpu["driver"] = (driver1.ru_utime + driver1.ru_stime) - (driver0.ru_utime + driver0.ru_stime)
    trials = tune_reports(storage / "cluster")
    span = max(t[-1]["reported_at"] for t in trials) - min(t[0]["started_at"] for t in trials)
    # A reused actor keeps its process, so (node, pid) names a trial slot.
    slots: dict[tuple[str, int], list] = {}
    for t in trials:
        slots.setdefault((t[-1]["node_id"], t[-1]["pid"]), []).append(t)
    firsts = sorted(ts[0][0]["started_at"] for ts in slots.values())
    gaps = [o["overhead_s"] for ts in slots.values() for o in start_overheads(ts)]
    return {"trials": len(trials), "span_s": span, "per_hour": 3600 * len(trials) / span,
            "trial_s": statistics.median(t[-1]["reported_at"] - t[0]["started_at"] for t in trials),
            "gap_s": statistics.median(gaps) if gaps else float("nan"), "skew_s": firsts[-1] - firsts[0],
            "nodes": len({node for node, _ in slots}),
            "slots": "/".join(str(len(ts)) for ts in sorted(slots.values(), key=len, reverse=True)),
            "launch_s": wall, "load": load, **{f"cpu_{k}": v for k, v in cpu.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=8, help="configurations (1 seed each) in the sweep")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=1024, help="synthetic 32x32 images per split")
    p.add_argument("--rounds", type=int, default=1, help="times the capacity check and three setups repeat")
    args = p.parse_args(argv)
    base = sweep_base(args)
    print(f"# bench_cluster; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; sweep: "
          f"{args.configs} configurations x 1 seed x {args.epochs} epochs, synthetic 32x32 "
          f"({args.images} train images), cnn width 16, sparse head")
    print("span_s: first trial start to last report; trial_s: median trial; gap_s: median idle time of a slot "
          "between its trials;\nskew_s: start of the last slot's first trial after the first's; slots: trials per "
          "slot (node, process);\ncpu trial/ray/driver: CPU seconds during the launch in trial actors, other Ray "
          "processes, the driver; load: 1-minute load average before the setup")
    print(f"{'round':>5} {'setup':<16} {'trials':>6} {'nodes':>5} {'slots':>6} {'span_s':>7} {'trial_s':>7} "
          f"{'gap_s':>6} {'skew_s':>6} {'trials/h':>9} {'launch_s':>8} {'cpu trial/ray/driver':>20} {'load':>5}")
    per_hour: dict[str, list[float]] = {s: [] for s in SETUPS}
    capacity: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        space = write_space(Path(tmp), "cluster", base,
                            # distinct configurations of the same cost
                            {"train.lr": {"grid": [round(0.01 * (i + 1), 3) for i in range(args.configs)]}})
        for rnd in range(1, args.rounds + 1):
            capacity.append(host_capacity(base))
            print(f"{rnd:>5} host capacity: 2 plain trials at once / 1 alone = {capacity[-1]:.2f}x", flush=True)
            # Alternate the order between rounds so a steady drift in load does not favour one setup.
            for setup in (list(SETUPS) if rnd % 2 else list(SETUPS)[::-1]):
                m = measure(setup, space, Path(tmp) / f"{rnd}_{SETUPS[setup][0]}w{SETUPS[setup][1]}c")
                per_hour[setup].append(m["per_hour"])
                print(f"{rnd:>5} {setup:<16} {m['trials']:>6} {m['nodes']:>5} {m['slots']:>6} {m['span_s']:7.1f} "
                      f"{m['trial_s']:7.2f} {m['gap_s']:6.2f} {m['skew_s']:6.2f} {m['per_hour']:9.0f} "
                      f"{m['launch_s']:8.1f} {m['cpu_trial']:8.1f}/{m['cpu_ray']:5.1f}/{m['cpu_driver']:5.1f} "
                      f"{m['load']:5.1f}", flush=True)
    mean = {s: statistics.fmean(v) for s, v in per_hour.items()}
    cap = statistics.fmean(capacity)
    for setup in (CLUSTER, ONE_NODE_2CPU):
        print(f"{setup} / {BASELINE}: {mean[setup] / mean[BASELINE]:.2f}x")
    print(f"{CLUSTER} / {ONE_NODE_2CPU}: {mean[CLUSTER] / mean[ONE_NODE_2CPU]:.2f}x")
    ratio = mean[CLUSTER] / mean[BASELINE]
    print(f"trials/hour ratio 2 nodes vs 1 node x 1 CPU: {ratio:.2f}x (goal >= {GOAL}: "
          f"{'met' if ratio >= GOAL else 'NOT met'}); host capacity {cap:.2f}x, so the cluster used "
          f"{ratio / cap:.0%} of the parallelism the host had free")
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
