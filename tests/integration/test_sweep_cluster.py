"""A real two-node Ray cluster on loopback (separate `ray start` processes, token auth): a sweep with
--address and shared local storage runs trials on both nodes and writes complete tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sweeps import moesweep, write_space

pytestmark = pytest.mark.integration


def test_two_node_sweep(tmp_path: Path) -> None:
    from ray_cluster import LoopbackCluster

    space = write_space(tmp_path, name="twonode",
                        search={"head.kind": {"grid": ["dense", "soft", "sparse"]},
                                "head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}},
                        analysis={"what": ["latency"], "latency_batch_sizes": [1, 8], "latency_repeats": 3})
    storage = tmp_path / "shared"
    with LoopbackCluster(num_workers=1, cpus_per_node=1) as cluster:
        proc = moesweep("launch", "--space", str(space), "--storage", str(storage), "--address", cluster.address,
                        env=cluster.env, timeout=600)
    out = storage / "twonode"
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 8 and set(trials["status"]) == {"done"}
    assert trials["node_id"].nunique() == 2, "trials ran on one node only"
    epochs = pd.read_parquet(out / "epochs.parquet")
    assert len(epochs) == 8 * 3 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(pd.read_parquet(out / "configs.parquet")) == 4
    tasks = pd.read_parquet(out / "tasks.parquet")
    assert set(tasks["status"]) == {"done"} and len(tasks) == 3  # latency of the best config per head
    manifest = (out / "manifest.json").read_text()
    assert '"nodes": 2' in manifest
    assert "report:" in proc.stdout
