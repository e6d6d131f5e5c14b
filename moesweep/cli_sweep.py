"""CLI commands backed by Ray or the tables: launch, status, analyze, report, summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def _results_dir(path: str) -> Path:
    from moesweep.cli import CliError

    p = Path(path)
    if not p.is_dir():
        raise CliError(f"{p}: no such results directory")
    if not (p / "manifest.json").exists() and not (p / "trials.parquet").exists():
        raise CliError(f"{p}: not a moesweep results directory (no manifest.json or trials.parquet)")
    return p


def cmd_launch(args: argparse.Namespace) -> int:
    from moesweep.sweep.launch import launch

    return launch(args.space, name=args.name, storage=args.storage, address=args.address, resume=args.resume,
                  max_concurrent=args.max_concurrent, dry_run=args.dry_run, no_analysis=args.no_analysis)


def cmd_status(args: argparse.Namespace) -> int:
    from moesweep.sweep.status import print_status

    return print_status(_results_dir(args.results_dir))


def cmd_analyze(args: argparse.Namespace) -> int:
    from moesweep.sweep.tasks import run_analysis

    what = [w.strip() for w in args.what.split(",")] if args.what else None
    return run_analysis(_results_dir(args.results_dir), what=what, samples=args.samples, top=args.top,
                        address=args.address)


def cmd_report(args: argparse.Namespace) -> int:
    from moesweep.report import build_report

    path = build_report(_results_dir(args.results_dir), out=args.out, png=args.png)
    print(path)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from moesweep.report import print_summary

    print_summary(_results_dir(args.results_dir))
    return 0


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def register(sub) -> None:
    la = sub.add_parser("launch", help="run a sweep on Ray Tune (local Ray, or a cluster with --address)")
    la.add_argument("--space", required=True, help="search space YAML (e.g. search_spaces/quick.yaml)")
    la.add_argument("--name", help="sweep name (default: the space's name)")
    la.add_argument("--storage", help="results root: a path (shared on clusters) or a URI such as s3://bucket/x")
    la.add_argument("--address", help="Ray cluster address (auto or HOST:PORT); default: start Ray locally")
    la.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    la.add_argument("--max-concurrent", type=_positive, help="cap on concurrently running configurations")
    la.add_argument("--dry-run", action="store_true", help="validate and print the trial plan; start nothing")
    la.add_argument("--no-analysis", action="store_true", help="skip the post-sweep analyses (the report is still written from the trial tables)")
    la.set_defaults(func=cmd_launch)

    st = sub.add_parser("status", help="what is done, running, failed, and how to resume")
    st.add_argument("results_dir")
    st.set_defaults(func=cmd_status)

    an = sub.add_parser("analyze", help="Hessian sharpness, loss surface and latency of the best checkpoints")
    an.add_argument("results_dir")
    an.add_argument("--what", help="comma-separated subset of sharpness,landscape,latency")
    an.add_argument("--samples", type=_positive, help="images per split for sharpness/landscape")
    an.add_argument("--top", type=_positive, help="analyse the N best configurations per head")
    an.add_argument("--address", help="Ray cluster address; default: start Ray locally")
    an.set_defaults(func=cmd_analyze)

    rp = sub.add_parser("report", help="write RESULTS_DIR/report.html from the Parquet tables")
    rp.add_argument("results_dir")
    rp.add_argument("--out", help="output HTML path (default RESULTS_DIR/report.html)")
    rp.add_argument("--png", action="store_true", help="also write each figure as PNG (needs kaleido + Chromium)")
    rp.set_defaults(func=cmd_report)

    sm = sub.add_parser("summary", help="best configurations and key figures as a terminal table")
    sm.add_argument("results_dir")
    sm.set_defaults(func=cmd_summary)
