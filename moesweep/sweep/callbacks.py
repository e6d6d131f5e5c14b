"""Driver-side Tune callbacks: live Parquet tables and a compact progress display.

Both are picklable (Tune stores them with the experiment, and ``--resume`` restores them).
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from moesweep.results import TRIAL_TABLE_KEYS, upsert_table
from moesweep.sweep.space import config_id
from moesweep.sweep.spec import SweepSpec
from moesweep.sweep.tables import rows_for_configuration


def point_of(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration's dotted overrides (grid/random put them under "point"; Optuna flat)."""
    return dict(config.get("point", config))


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f}s"


class TablesCallback(tune.Callback):
    """Refresh trials.parquet / epochs.parquet as results arrive (throttled) and when trials end."""

    def __init__(self, spec: SweepSpec, sweep: str, tables_dir: str, every_s: float = 5.0) -> None:
        self.spec, self.sweep, self.tables_dir, self.every_s = spec, sweep, tables_dir, every_s
        self._pending: dict[str, tuple[dict, dict, str]] = {}
        self._last = 0.0

    def _queue(self, trial, status: str) -> None:
        self._pending[trial.trial_id] = (point_of(trial.config), dict(trial.last_result or {}), status)

    def _flush(self, force: bool = False) -> None:
        if not self._pending or (not force and time.monotonic() - self._last < self.every_s):
            return
        trials, epochs = [], []
        for point, metrics, status in self._pending.values():
            rows = rows_for_configuration(self.spec, self.sweep, point, metrics, status, None, None, None)
            trials += rows["trials"]
            epochs += rows["epochs"]
        upsert_table(self.tables_dir, "trials", trials, key=TRIAL_TABLE_KEYS["trials"])
        upsert_table(self.tables_dir, "epochs", epochs, key=TRIAL_TABLE_KEYS["epochs"])
        self._pending.clear()
        self._last = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._queue(trial, "running")
        self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._queue(trial, "done")
        self._flush(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._queue(trial, "error")
        self._flush(force=True)

    def on_experiment_end(self, trials, **info):
        self._flush(force=True)


class ProgressCallback(tune.Callback):
    """One line per finished configuration and a periodic status table, instead of Ray's log stream."""

    def __init__(self, spec: SweepSpec, total: int, every_s: float = 15.0) -> None:
        self.spec, self.total, self.every_s = spec, total, every_s
        self._t0 = None
        self._last = 0.0
        self._best: dict[str, tuple[float, str]] = {}
        self._durations: list[float] = []
        self._started: dict[str, float] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_console"}

    @property
    def console(self):
        if getattr(self, "_console", None) is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        point = point_of(trial.config)
        kind = point.get("head.kind", self.spec.base.get("head", {}).get("kind", "dense"))
        acc = r.get("best_val_acc", float("nan"))
        if trial.trial_id in self._started:
            self._durations.append(time.monotonic() - self._started.pop(trial.trial_id))
        if acc == acc and acc > self._best.get(kind, (-1.0, ""))[0]:
            self._best[kind] = (acc, config_id(self.spec, point))
        desc = " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in point.items())
        status = r.get("trial_status", "stopped")
        status = "stopped" if status == "running" else status
        self.console.print(f"[green]✓[/] {desc}  best val {acc:.4f} (mean of {len(self.spec.seeds)} seeds, "
                           f"{r.get('epoch', -1) + 1} epochs) {status}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.console.print(f"[red]✗[/] {point_of(trial.config)} failed (see the trial's error.txt; retried up to 2 times)")

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        self._t0 = self._t0 or now
        if now - self._last < self.every_s:
            return
        self._last = now
        self.print_status(trials, now)

    def print_status(self, trials, now: float) -> None:
        self._t0 = self._t0 or now
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        done = counts.get("TERMINATED", 0) + counts.get("ERROR", 0)
        running = max(counts.get("RUNNING", 0), 1)
        remaining = max(self.total - done, 0)
        eta = ""
        if self._durations:
            avg = sum(self._durations) / len(self._durations)
            eta = f"  ETA ~{_fmt_s(avg * remaining / running)}"
        best = "  ".join(f"{k} {a:.4f}" for k, (a, _) in sorted(self._best.items()))
        self.console.print(
            f"[dim]{_fmt_s(now - self._t0)}[/]  configs: {counts.get('PENDING', 0) + max(self.total - len(trials), 0)} pending, "
            f"{counts.get('RUNNING', 0)} running, {counts.get('TERMINATED', 0)} done, {counts.get('ERROR', 0)} failed"
            f"{eta}" + (f"  | best val: {best}" if best else ""))

    def on_experiment_end(self, trials, **info):
        self.print_status(trials, time.monotonic())
