"""Reliability of real local sweeps: driver SIGKILL + resume, retry from checkpoint, non-finite loss,
ASHA deciding per configuration, Optuna on seed means."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweeps import TINY_BASE, moesweep, write_space

pytestmark = pytest.mark.integration


def _no_dupes(d: Path) -> None:
    keys = {"trials": ["trial_id"], "epochs": ["trial_id", "epoch"],
            "experts": ["trial_id", "epoch", "split", "expert"], "configs": ["config_id"]}
    for name, key in keys.items():
        df = pd.read_parquet(d / f"{name}.parquet")
        assert not df.duplicated(key).any(), f"duplicate rows in {name}"


def _result_lines(d: Path) -> dict[str, int]:
    """Reports per Tune trial directory (result.json has one line per tune.report)."""
    return {p.parent.name: len(p.read_text().splitlines()) for p in d.glob("cfg_*/result.json")}


def test_sigkill_driver_then_resume(tmp_path: Path) -> None:
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 4}}
    space = write_space(tmp_path, name="killme", base=base, max_concurrent=1,
                        search={"head.kind": {"grid": ["dense", "soft", "sparse"]},
                                "head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}})
    storage = tmp_path / "results"
    out = storage / "killme"
    driver = subprocess.Popen([sys.executable, "-m", "moesweep.cli", "launch", "--space", str(space),
                               "--storage", str(storage), "--no-analysis"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # wait until one configuration has finished
            if (out / "trials.parquet").exists():
                t = pd.read_parquet(out / "trials.parquet")
                if (t["status"] == "done").sum() >= 2:
                    break
            assert driver.poll() is None, driver.stdout.read().decode()
            time.sleep(0.5)
        else:
            pytest.fail("no configuration finished in time")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started die at once
        driver.wait()
    done_before = pd.read_parquet(out / "trials.parquet")
    done_cfgs = set(done_before[done_before["status"] == "done"]["config_id"])
    lines_before = _result_lines(out)
    finished_dirs = {k for k, v in lines_before.items() if v == 4}
    assert finished_dirs, "expected a finished trial directory before the kill"

    proc = moesweep("launch", "--space", str(space), "--storage", str(storage), "--resume", "--no-analysis",
                    timeout=600)
    assert "tables:" in proc.stdout
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 8 and set(trials["status"]) == {"done"}
    assert done_cfgs <= set(trials["config_id"])
    lines_after = _result_lines(out)
    # completed trials were not re-run: no new reports in their result files
    assert all(lines_after[k] == 4 for k in finished_dirs)
    _no_dupes(out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"


def test_retry_from_checkpoint_matches_uninterrupted_run(tmp_path: Path) -> None:
    space = write_space(tmp_path, name="retry", search={"head.kind": {"grid": ["sparse"]}}, seeds=[0],
                        fault_injection={"fail_once_at_epoch": 2, "marker_dir": str(tmp_path / "markers")})
    moesweep("launch", "--space", str(space), "--storage", str(tmp_path / "results"), "--no-analysis")
    out = tmp_path / "results" / "retry"
    assert len(list((tmp_path / "markers").glob("*.failed"))) == 1  # the fault fired once
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["done"]
    got = pd.read_parquet(out / "epochs.parquet").sort_values("epoch")

    # The same trial without Ray, uninterrupted, in a subprocess (one torch thread, like the trial).
    code = (
        "import json, sys, torch; torch.set_num_threads(1)\n"
        "from moesweep.sweep.spec import load_spec; from moesweep.sweep.space import trial_cfg\n"
        "from moesweep.data import load_data; from moesweep.train import train_trial\n"
        f"spec = load_spec({str(space)!r}); cfg = trial_cfg(spec, {{'head.kind': 'sparse'}}, 0)\n"
        "res = train_trial(cfg, load_data(cfg.data, 'cpu'))\n"
        "print(json.dumps([[m['train_loss'], m['val_loss'], m['val_acc']] for m in res.history]))\n"
        "print(res.test_acc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    hist_line, test_line = proc.stdout.strip().splitlines()[-2:]
    expected = json.loads(hist_line)
    assert got[["train_loss", "val_loss", "val_acc"]].values.tolist() == expected  # bit-identical on CPU
    assert trials["test_acc"].iloc[0] == float(test_line)


def test_nonfinite_loss_is_a_final_failure(tmp_path: Path) -> None:
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "lr": 1.0e6}}
    space = write_space(tmp_path, name="nan", base=base, search={"head.kind": {"grid": ["dense"]}}, seeds=[0])
    moesweep("launch", "--space", str(space), "--storage", str(tmp_path / "results"), "--no-analysis")
    out = tmp_path / "results" / "nan"
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["failed"]
    assert "non-finite loss" in trials["error"].iloc[0] and "epoch" in trials["error"].iloc[0]
    assert not list(out.glob("cfg_*/error.txt"))  # ended normally: Tune did not retry it


def test_asha_decides_per_configuration_on_seed_means(tmp_path: Path) -> None:
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 4}}
    space = write_space(tmp_path, name="asha", base=base, seeds=[0, 1],
                        search={"head.kind": {"grid": ["dense", "soft", "sparse"]},
                                "train.lr": {"grid": [0.001, 0.05]}},
                        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 3})
    moesweep("launch", "--space", str(space), "--storage", str(tmp_path / "results"), "--no-analysis")
    out = tmp_path / "results" / "asha"
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 6 * 2
    # seeds of a configuration are never split by the scheduler: same epochs for all of them
    assert trials.groupby("config_id")["epochs_done"].nunique().eq(1).all()
    assert (trials["epochs_done"] < 4).any(), "ASHA stopped nothing"
    assert set(trials[trials["epochs_done"] < 4]["status"]) == {"stopped"}
    # what Tune saw each epoch is the mean over the configuration's seeds
    epochs = pd.read_parquet(out / "epochs.parquet")
    for d in out.glob("cfg_*"):
        reported = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        for r in reported:
            rows = epochs[(epochs["config_id"] == r["config_id"]) & (epochs["epoch"] == r["epoch"])]
            assert len(rows) == 2 and r["val_acc"] == pytest.approx(rows["val_acc"].mean())


def test_optuna_samples_configurations_with_all_seeds(tmp_path: Path) -> None:
    space = write_space(tmp_path, name="opt", search_alg="optuna", num_samples=3, seeds=[0, 1],
                        search={"head.kind": {"choice": ["soft", "sparse"]},
                                "head.balance_weight": {"loguniform": [0.001, 0.1]},
                                "head.top_k": {"choice": [1, 2], "when": {"head.kind": ["sparse"]}}})
    moesweep("launch", "--space", str(space), "--storage", str(tmp_path / "results"), "--no-analysis")
    trials = pd.read_parquet(tmp_path / "results" / "opt" / "trials.parquet")
    assert trials["config_id"].nunique() == 3 and len(trials) == 6
    assert trials.groupby("config_id")["balance_weight"].nunique().eq(1).all()  # seeds share values
    assert trials["balance_weight"].between(0.001, 0.1).all()
    assert trials[trials["head"] == "soft"]["top_k"].isna().all()
