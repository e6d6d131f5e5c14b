"""Where a sweep's tables live: local paths vs storage URIs mirrored with pyarrow filesystems."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesweep.results import read_table, write_table
from moesweep.sweep.launch import Location, locate, resume_command, sync_tables


def test_local_storage_holds_tables_beside_tune_state(tmp_path: Path) -> None:
    loc = locate(str(tmp_path / "res"), "s1")
    assert loc.tables_dir == (tmp_path / "res" / "s1").resolve() and loc.remote is None
    assert loc.experiment == str((tmp_path / "res" / "s1").resolve())


def test_uri_storage_mirrors_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"file://{tmp_path / 'bucket'}"
    loc = locate(uri, "s2")
    assert loc.remote == f"{uri}/s2" and loc.experiment == f"{uri}/s2"
    write_table(loc.tables_dir, "tasks", [{"sweep": "s2", "trial_id": "t", "analysis": "latency",
                                          "split": "-", "params_hash": "h", "status": "done"}])
    (loc.tables_dir / "manifest.json").write_text("{}")
    sync_tables(loc)
    mirrored = tmp_path / "bucket" / "s2"
    assert (mirrored / "manifest.json").read_text() == "{}"
    assert read_table(mirrored, "tasks")["status"].tolist() == ["done"]


def test_resume_command_names_storage_and_address(tmp_path: Path) -> None:
    loc = Location(str(tmp_path), "s3", tmp_path / "s3", None)
    cmd = resume_command("spaces/x.yaml", loc, "127.0.0.1:6379")
    assert cmd.startswith("moesweep launch --space spaces/x.yaml --name s3 --resume")
    assert f"--storage {tmp_path}" in cmd and "--address 127.0.0.1:6379" in cmd
