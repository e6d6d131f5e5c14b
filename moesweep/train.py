"""One trial: plain PyTorch, no Ray. ``train_trial(cfg, data, report=None, ...) -> TrialResult``.

The sweep's trainable is a thin wrapper that passes a ``report`` calling ``tune.report``; tests pass a
list's ``append``. Same config and seed give identical metrics on CPU, and resuming from a checkpoint
of epoch k gives the metrics of an uninterrupted run (all RNG states live in the checkpoint).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from moesweep.checkpoint import load_state, save_state
from moesweep.config import TrialCfg, TrainCfg, to_dict
from moesweep.data import Data, eval_batches, train_batches
from moesweep.metrics import UtilizationMeter
from moesweep.models import build_model, count_params

ReportFn = Callable[[dict[str, Any], "str | None"], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; a final failure (retrying would repeat it)."""


@dataclass
class TrialResult:
    status: str
    epochs_done: int
    best_epoch: int
    best_val_acc: float
    final_val_acc: float
    test_acc: float
    train_acc: float
    params: int
    head_params: int
    active_head_macs: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda requested but CUDA is not available")
    return torch.device(name)


def lr_at(t: TrainCfg, epoch_pos: float) -> float:
    """Learning rate at fractional epoch ``epoch_pos`` (0-based). Pure, so the schedule's position is
    the only scheduler state a checkpoint needs."""
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "multistep":
        return t.lr * t.gamma ** sum(epoch_pos >= m for m in t.milestones)
    if t.warmup_epochs and epoch_pos < t.warmup_epochs:  # cosine with linear warm-up
        return t.lr * (epoch_pos + 1e-3) / t.warmup_epochs
    span = max(t.epochs - t.warmup_epochs, 1e-9)
    return 0.5 * t.lr * (1 + math.cos(math.pi * min((epoch_pos - t.warmup_epochs) / span, 1.0)))


def make_optimizer(model: torch.nn.Module, t: TrainCfg) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (1-D tensors), as is standard for SGD on ResNets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0)


def _autocast(device: torch.device, t: TrainCfg):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=t.bf16 and device.type == "cuda")


def _is_moe(model: torch.nn.Module) -> bool:
    return hasattr(model.head, "num_experts")


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrialCfg,
             meter: UtilizationMeter | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y) in eval mode (no augmentation, no gate noise)."""
    model.eval()
    device = x.device
    loss_sum, correct = 0.0, 0
    with torch.no_grad(), _autocast(device, cfg.train):
        for xb, yb in eval_batches(x, y, cfg.train.eval_batch_size):
            logits, aux = model(xb)
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
            if meter is not None:
                meter.update(aux, yb)
    n = max(len(y), 1)
    return loss_sum / n, correct / n


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "batches": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["batches"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _split_metrics(prefix: str, util: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Utilization scalars get a ``train_``/``val_`` prefix; vectors are kept apart for the tables."""
    scalars, vectors = {}, {}
    for k, v in util.items():
        (vectors if isinstance(v, (list, tuple)) else scalars)[f"{prefix}_{k}"] = v
    return scalars, vectors


class TrialRunner:
    """One trial as a step-per-epoch object, so a sweep can advance several seeds of a configuration in
    lockstep (``train_trial`` is the plain loop over it)."""

    def __init__(self, cfg: TrialCfg, data: Data, resume: str | Path | None = None) -> None:
        self.t0 = time.perf_counter()
        self.cfg, self.data = cfg, data
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = device = data.train_x.device
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, data.in_channels, data.image_size, data.num_classes).to(device)
        self.opt = make_optimizer(self.model, t)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "epoch": -1, "model": None}
        self.epoch, self.wall_before = 0, 0.0
        if resume is not None:
            st = load_state(resume, map_location=device)
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            _set_rng_state(st["rng"], self.gen, device)
            self.history = list(st["history"])
            self.best = {"val_acc": st["best_val_acc"], "epoch": st["best_epoch"], "model": st["best_model"]}
            self.epoch = st["epoch"] + 1
            self.wall_before = st.get("wall_s", 0.0)
        self.moe = _is_moe(self.model)

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.train.epochs

    def _meter(self) -> UtilizationMeter | None:
        return UtilizationMeter(self.model.head.num_experts, self.data.num_classes) if self.moe else None

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate on validation; returns scalars plus per-expert vectors."""
        cfg, t, data, model, opt, epoch = self.cfg, self.cfg.train, self.data, self.model, self.opt, self.epoch
        steps = max(1, math.ceil(len(data.train_y) / t.batch_size))
        model.train()
        meter = self._meter()
        loss_sum = bal_sum = 0.0
        correct = seen = 0
        te = time.perf_counter()
        for step, (xb, yb) in enumerate(train_batches(data, t.batch_size, self.gen, cfg.data)):
            lr = lr_at(t, epoch + step / steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with _autocast(self.device, t):
                logits, aux = model(xb)
                task = F.cross_entropy(logits.float(), yb)
                bal = aux["balance_loss"].float()
                loss = task + bal
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(yb)
            loss_sum += task.item() * b
            bal_sum += bal.item() * b
            correct += (logits.argmax(1) == yb).sum().item()
            seen += b
            if meter is not None:
                meter.update({k: v.detach() for k, v in aux.items()}, yb)
        epoch_s = time.perf_counter() - te
        val_meter = self._meter()
        val_loss, val_acc = evaluate(model, data.val_x, data.val_y, cfg, val_meter)
        metrics: dict[str, Any] = {
            "epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "val_loss": val_loss, "val_acc": val_acc, "balance_loss": bal_sum / seen,
            "lr": lr_at(t, epoch), "epoch_s": epoch_s, "images_per_s": seen / max(epoch_s, 1e-9),
        }
        vectors: dict[str, Any] = {}
        for prefix, m in (("train", meter), ("val", val_meter)):
            if m is not None:
                s, v = _split_metrics(prefix, m.compute())
                metrics.update(s)
                vectors.update(v)
        if val_acc > self.best["val_acc"]:
            self.best = {"val_acc": val_acc, "epoch": epoch,
                         "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        metrics["best_val_acc"] = self.best["val_acc"]
        metrics.update(vectors)
        self.history.append(metrics)
        self.epoch += 1
        return metrics

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def save(self, checkpoint_dir: str | Path) -> Path:
        """Everything needed to resume bit-identically, plus cfg and data shape to rebuild the model."""
        d = self.data
        return save_state(checkpoint_dir, {
            "cfg": to_dict(self.cfg), "epoch": self.epoch - 1, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "schedule": {"kind": self.cfg.train.schedule, "epoch": self.epoch},
            "rng": _rng_state(self.gen, self.device), "history": self.history,
            "best_val_acc": self.best["val_acc"], "best_epoch": self.best["epoch"], "best_model": self.best["model"],
            "data_shape": {"in_channels": d.in_channels, "image_size": d.image_size, "num_classes": d.num_classes},
            "wall_s": self.wall_s(),
        })

    def finish(self, checkpoint: str | None = None) -> TrialResult:
        """Test accuracy of the best-validation weights; the model keeps those weights afterwards."""
        model = self.model
        if self.best["model"] is not None:
            model.load_state_dict(self.best["model"])
        _, test_acc = evaluate(model, self.data.test_x, self.data.test_y, self.cfg)
        last = self.history[-1] if self.history else {}
        return TrialResult(
            status="done", epochs_done=len(self.history), best_epoch=self.best["epoch"],
            best_val_acc=self.best["val_acc"], final_val_acc=last.get("val_acc", float("nan")),
            test_acc=test_acc, train_acc=last.get("train_acc", float("nan")), params=count_params(model),
            head_params=count_params(model.head), active_head_macs=int(model.head.active_macs()),
            wall_s=self.wall_s(), history=self.history, checkpoint=checkpoint,
        )


def train_trial(cfg: TrialCfg, data: Data, report: ReportFn | None = None,
                checkpoint_dir: str | Path | None = None, resume: str | Path | None = None,
                progress: Callable[[dict[str, Any]], None] | None = None) -> TrialResult:
    """Train one trial.

    Args:
        cfg: the typed trial config.
        data: splits as tensors on the trial's device (``moesweep.data.load_data``).
        report: called once per epoch with (metrics, checkpoint_dir or None).
        checkpoint_dir: where ``state.pt`` is (over)written after each epoch; None disables checkpoints.
        resume: a checkpoint (dir or file) to continue from.
        progress: optional per-epoch callback for terminal output.
    Returns:
        TrialResult with the best-validation epoch and the test accuracy of that epoch's weights.
    """
    runner = TrialRunner(cfg, data, resume=resume)
    ckpt = str(checkpoint_dir) if checkpoint_dir is not None else None
    while not runner.done:
        metrics = runner.run_epoch()
        if checkpoint_dir is not None:
            runner.save(checkpoint_dir)
        if progress is not None:
            progress(metrics)
        if report is not None:
            report(metrics, ckpt)
    return runner.finish(checkpoint=ckpt)
