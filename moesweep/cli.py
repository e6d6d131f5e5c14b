"""Command line: ``moesweep launch | train | analyze | report | status | summary``.

Heavy imports (torch, ray, plotly) happen inside each command so ``--help`` and bad flags answer fast.
Every expected failure (bad YAML, path, checkpoint, flag) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class CliError(Exception):
    """An expected, user-facing failure: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Expected failures; looked up after the fact so a failing command never imports torch just for this.
    (A missing dataset raises a FileNotFoundError subclass.)"""
    from moesweep.config import ConfigError

    errors: list[type[BaseException]] = [CliError, ConfigError, FileNotFoundError]
    ckpt = sys.modules.get("moesweep.checkpoint")
    if ckpt is not None:
        errors.append(ckpt.CheckpointError)
    return tuple(errors)


# ---------------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from moesweep.config import load_trial_cfg, to_dict
    from moesweep.data import load_data
    from moesweep.results import write_json
    from moesweep.train import resolve_device, train_trial

    cfg = load_trial_cfg(args.config, args.set)
    console = Console(highlight=False, soft_wrap=True)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = load_data(cfg.data, device)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", to_dict(cfg))
    console.print(f"[bold]{cfg.head.kind}[/] head, {cfg.backbone.name} on {data.name} "
                  f"({len(data.train_y)}/{len(data.val_y)}/{len(data.test_y)} train/val/test) on {device}")

    def progress(m: dict[str, Any]) -> None:
        util = f"  route_H {m['val_route_entropy']:.2f}" if "val_route_entropy" in m else ""
        console.print(f"epoch {m['epoch'] + 1:3d}/{cfg.train.epochs}  loss {m['train_loss']:.3f}  "
                      f"train {m['train_acc']:.3f}  val {m['val_acc']:.3f}  lr {m['lr']:.4f}  "
                      f"{m['images_per_s']:.0f} img/s{util}")

    res = train_trial(cfg, data, checkpoint_dir=(out / "checkpoint") if out else None,
                      resume=args.resume, progress=progress)
    console.print(f"best val {res.best_val_acc:.4f} (epoch {res.best_epoch + 1}), test {res.test_acc:.4f}, "
                  f"{res.params:,} params ({res.head_params:,} head), {res.wall_s:.1f}s")
    if out is not None:
        summary = {k: v for k, v in res.__dict__.items() if k != "history"}
        write_json(out / "result.json", summary)
        console.print(f"wrote {out}/result.json")
    return 0


# ----------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moesweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="run one trial (no Ray)")
    t.add_argument("--config", help="trial config YAML (default: the built-in digits config)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. head.num_experts=16 (repeatable)")
    t.add_argument("--out", help="directory for config.json, result.json and the checkpoint")
    t.add_argument("--resume", help="checkpoint (dir or state.pt) to continue from")
    t.set_defaults(func=cmd_train)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands() -> list:
    """Commands that live beside their implementation (sweep, analysis, report)."""
    regs = []
    try:
        from moesweep.cli_sweep import register as reg_sweep

        regs.append(reg_sweep)
    except ImportError:  # pragma: no cover - during development only
        pass
    return regs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("moesweep: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"moesweep: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
