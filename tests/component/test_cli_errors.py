"""Expected CLI failures: one line on stderr starting "moesweep: error:", exit code 2.

Two cases run the installed console script in a subprocess (exit status through the real entry point);
the rest call ``moesweep.cli.main`` in-process, which is the same code without the start-up cost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moesweep.cli import main

SCRIPT = Path(sys.executable).with_name("moesweep")  # .venv/bin/moesweep beside .venv/bin/python


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"console script missing: {SCRIPT} (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("moesweep: error: ")
    return lines[0]


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ---------------------------------------------------------------------------- real console script


def test_script_status_of_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    proc = run_script("status", str(missing), cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == f"moesweep: error: {missing}: no such results directory"
    assert proc.stdout == ""


def test_script_rejects_max_concurrent_zero(tmp_path: Path) -> None:
    proc = run_script("launch", "--space", "x.yaml", "--max-concurrent", "0", cwd=tmp_path)
    assert proc.returncode == 2  # argparse's usage error, before anything is imported or started
    assert "--max-concurrent: expected a positive integer, got '0'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("overrides, fragment", [
    (["head.topk=2"], "head.topk: unknown key"),
    (["head.top_k"], "--set 'head.top_k': expected key.path=value"),
    (["head.num_experts=2", "head.top_k=3"], "head.top_k: must be in 1..num_experts (2), got 3"),
    (["head.kind=moe"], "head.kind: unknown value 'moe' (expected one of dense, soft, sparse)"),
])
def test_train_bad_set(overrides: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--out", str(tmp_path / "out")]
    for ov in overrides:
        argv += ["--set", ov]
    rc, out, err = run_main(argv, capsys)
    assert rc == 2
    assert fragment in one_error_line(err)
    assert not (tmp_path / "out").exists(), "nothing is written before the config is valid"
    assert out == ""


def test_train_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.yaml"
    rc, _, err = run_main(["train", "--config", str(missing)], capsys)
    assert rc == 2
    assert one_error_line(err) == f"moesweep: error: {missing}: no such file"


def test_train_invalid_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("head: {kind: sparse\n")
    rc, _, err = run_main(["train", "--config", str(p)], capsys)
    assert rc == 2
    assert f"{p}: line " in one_error_line(err) and "invalid YAML" in err


@pytest.mark.parametrize("command", ["report", "summary", "status"])
def test_results_commands_on_a_dir_that_is_not_a_sweep(command: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    rc, _, err = run_main([command, str(empty)], capsys)
    assert rc == 2
    assert one_error_line(err) == (f"moesweep: error: {empty}: not a moesweep results directory "
                                   "(no manifest.json or trials.parquet)")
    assert list(empty.iterdir()) == [], "no report or table is written into a foreign directory"


def test_status_of_missing_dir_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run_main(["status", "/nonexistent/moesweep-results"], capsys)
    assert rc == 2
    assert one_error_line(err) == "moesweep: error: /nonexistent/moesweep-results: no such results directory"


@pytest.mark.parametrize("argv, fragment", [
    (["launch", "--space", "x.yaml", "--max-concurrent", "0"], "expected a positive integer, got '0'"),
    (["launch", "--space", "x.yaml", "--max-concurrent", "two"], "expected a positive integer, got 'two'"),
    (["launch"], "the following arguments are required: --space"),
    (["analyze", "results/x", "--top", "-1"], "expected a positive integer, got '-1'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_flags_are_argparse_usage_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err
