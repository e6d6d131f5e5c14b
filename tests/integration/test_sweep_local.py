"""A real local Ray sweep end to end: tables, analysis, idempotent re-analysis, report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from sweeps import moesweep, write_space

pytestmark = pytest.mark.integration


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.parquet"))}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    space = write_space(tmp, search={"head.kind": {"grid": ["dense", "soft", "sparse"]},
                                     "head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}})
    proc = moesweep("launch", "--space", str(space), "--storage", str(tmp / "results"), timeout=600)
    assert "tables:" in proc.stdout
    return tmp / "results" / "tiny"


def test_trial_tables_complete(swept: Path) -> None:
    trials = pd.read_parquet(swept / "trials.parquet")
    # dense, soft, sparse k=1, sparse k=2 -> 4 configurations x 2 seeds; the conditional top_k
    # multiplies only sparse configurations.
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"done"}
    assert trials.groupby("config_id")["seed"].apply(lambda s: sorted(s) == [0, 1]).all()
    assert trials["test_acc"].between(0, 1).all() and trials["best_val_acc"].between(0, 1).all()
    assert (trials["epochs_done"] == 3).all()
    assert trials["checkpoint"].map(lambda p: (Path(p) / "state.pt").is_file()).all()
    epochs = pd.read_parquet(swept / "epochs.parquet")
    assert len(epochs) == 8 * 3 and not epochs.duplicated(["trial_id", "epoch"]).any()
    moe = epochs[epochs["head"] != "dense"]
    assert moe["val_route_entropy"].between(0, 1).all()
    experts = pd.read_parquet(swept / "experts.parquet")
    # per MoE trial (6), epoch (3), split (2), expert (4); loads of one (trial, epoch, split) sum to 1
    assert len(experts) == 6 * 3 * 2 * 4
    sums = experts.groupby(["trial_id", "epoch", "split"])["load"].sum()
    assert ((sums - 1).abs() < 1e-6).all()
    configs = pd.read_parquet(swept / "configs.parquet")
    assert len(configs) == 4 and (configs["n_seeds"] == 2).all()
    row = configs.iloc[0]
    vals = trials[trials["config_id"] == row["config_id"]]["best_val_acc"]
    assert row["best_val_acc_mean"] == pytest.approx(vals.mean())
    assert row["best_val_acc_ci_low"] <= row["best_val_acc_mean"] <= row["best_val_acc_ci_high"]


def test_manifest(swept: Path) -> None:
    m = json.loads((swept / "manifest.json").read_text())
    for key in ("space", "command", "git_sha", "versions", "cluster", "start_time", "end_time", "selection"):
        assert key in m, key
    assert m["cluster"]["nodes"] == 1 and m["cluster"]["cpus"] >= 1
    assert m["status"] == "done" and m["versions"]["ray"].startswith("2.60")
    assert "--resume" in m["resume_command"]


def test_analysis_tables_for_best_config_of_every_head(swept: Path) -> None:
    trials = pd.read_parquet(swept / "trials.parquet")
    m = json.loads((swept / "manifest.json").read_text())
    chosen = set(m["selection"]["trial_ids"])
    # one configuration per head (top 1), all of its seeds
    assert trials[trials["trial_id"].isin(chosen)].groupby("head")["config_id"].nunique().eq(1).all()
    assert len(chosen) == 3 * 2
    sharp = pd.read_parquet(swept / "sharpness.parquet")
    assert set(sharp["trial_id"]) == chosen and set(sharp["split"]) == {"train", "test"}
    assert (sharp["lambda_max"] > 0).all() and sharp["trace"].notna().all()
    spec = pd.read_parquet(swept / "spectrum.parquet")
    assert set(spec["trial_id"]) == chosen
    land = pd.read_parquet(swept / "landscape.parquet")
    assert set(land["trial_id"]) == chosen and set(land["direction_kind"]) == {"eigvec", "random", "gaussian"}
    sparse_ids = set(trials[trials["head"] == "sparse"]["trial_id"]) & chosen
    assert land[land["trial_id"].isin(sparse_ids)]["routing_flip_rate"].notna().all()
    lat = pd.read_parquet(swept / "latency.parquet")
    assert set(lat["head"]) == {"dense", "soft", "sparse"}
    assert set(lat[lat["head"] == "sparse"]["dispatch"]) == {"batched", "naive"}
    tasks = pd.read_parquet(swept / "tasks.parquet")
    assert set(tasks["status"]) == {"done"} and not tasks.duplicated(["trial_id", "analysis", "split"]).any()


def test_reanalyze_adds_and_changes_nothing(swept: Path) -> None:
    before = _digest(swept)
    proc = moesweep("analyze", str(swept))
    assert "already done" in proc.stdout
    assert _digest(swept) == before


def test_report_and_summary(swept: Path) -> None:
    assert (swept / "report.html").is_file()
    proc = moesweep("summary", str(swept))
    assert "sparse" in proc.stdout and "dense" in proc.stdout
    proc = moesweep("status", str(swept))
    assert "done" in proc.stdout


def test_analyze_killed_midway_then_rerun_completes_without_duplicates(swept: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    before = pd.read_parquet(swept / "tasks.parquet")
    old_hashes = set(before["params_hash"])
    # new parameters (another sample count) -> a new params_hash -> fresh work for every sharpness job
    args = [sys.executable, "-m", "moesweep.cli", "analyze", str(swept), "--what", "sharpness", "--samples", "32"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (~pd.read_parquet(swept / "tasks.parquet")["params_hash"].isin(old_hashes)).any():
                break  # at least one task of the new run finished and was written
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = pd.read_parquet(swept / "tasks.parquet")
    n_new = (~partial["params_hash"].isin(old_hashes)).sum()
    assert 0 < n_new < 12, "kill came too late to test a partial run"
    moesweep("analyze", str(swept), "--what", "sharpness", "--samples", "32")
    tasks = pd.read_parquet(swept / "tasks.parquet")
    assert len(tasks) == len(before) and not tasks.duplicated(["trial_id", "analysis", "split"]).any()
    assert set(tasks["status"]) == {"done"}
    assert (~tasks[tasks["analysis"] == "sharpness"]["params_hash"].isin(old_hashes)).all()
    sharp = pd.read_parquet(swept / "sharpness.parquet")
    # the latest settings replaced the older rows: one row per (trial, split, parameter set), all at 32
    assert not sharp.duplicated(["trial_id", "split", "param_set"]).any()
    assert set(sharp["n_samples"]) == {32} and (sharp.groupby("trial_id").size() == 2).all()
