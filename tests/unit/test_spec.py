"""Malformed search spaces fail before Ray: `moesweep launch --space BAD --dry-run` exits 2 with one line.

Every case is written to a real YAML file and run through the real CLI in-process, with ``ray.init``
patched to raise, so a case that slipped through validation into Ray would fail loudly here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from moesweep.cli import main

REPO = Path(__file__).resolve().parents[2]
DROP = object()  # marks a top-level key to delete from the valid space

VALID: dict[str, Any] = {
    "name": "t",
    "base": {"data": {"name": "synthetic", "synthetic_size": 32},
             "backbone": {"name": "cnn", "width": 8},
             "head": {"hidden": 16, "num_experts": 4, "top_k": 1, "expert_hidden": 8},
             "train": {"epochs": 1}},
    "search": {"head.kind": {"grid": ["dense", "sparse"]},
               "head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}},
    "seeds": [0, 1],
}


def space(search: dict | None = None, **top: Any) -> dict[str, Any]:
    """The valid space with ``search`` replaced and top-level keys set (or dropped with DROP)."""
    d = copy.deepcopy(VALID)
    if search is not None:
        top["search"] = search
    for k, v in top.items():
        if v is DROP:
            d.pop(k)
        else:
            d[k] = v
    return d


def base_with(section: str, **kv: Any) -> dict[str, Any]:
    b = copy.deepcopy(VALID["base"])
    b[section] = {**b[section], **kv}
    return b


SPARSE_TOPK = {"head.kind": {"grid": ["dense", "sparse"]}}


def top_k_search(**dist: Any) -> dict[str, Any]:
    return {**SPARSE_TOPK, "head.top_k": dist}


def override(**rule: Any) -> dict[str, Any]:
    return {"cpu": 1, "gpu": 0, "overrides": [rule]}


@dataclass(frozen=True)
class Case:
    id: str
    payload: Any  # dict (dumped as YAML), str (raw text), bytes (raw bytes) or None (file absent)
    fragments: tuple[str, ...]  # must all appear in the error line


CASES = [
    # top level
    Case("unknown_top_key", space(seed=[0]), ("seed: unknown key", "did you mean seeds?")),
    Case("missing_name", space(name=DROP), ("name: a non-empty string is required",)),
    Case("blank_name", space(name="  "), ("name: a non-empty string is required",)),
    Case("name_not_string", space(name=3), ("name: a non-empty string is required",)),
    Case("name_bad_chars", space(name="my sweep/1"), ("name: start with a letter or digit",)),
    Case("name_dot_dot", space(name=".."), ("name:",)),
    Case("top_level_list", "- name\n- search\n", ("expected a mapping at the top level",)),
    Case("empty_file", "", ("expected a mapping at the top level",)),
    Case("invalid_yaml", "name: t\nsearch: {head.kind: {grid: [dense, sparse]}\n", ("invalid YAML", "line 3")),
    Case("missing_file", None, ("no such file",)),
    Case("binary_file", b"\xff\xfe\x00\x81", ()),
    # search keys
    Case("search_unknown_key", space({"head.topk": {"grid": [1]}}),
         ("search.head.topk: unknown key", "did you mean head.top_k?")),
    Case("search_data_name", space({"data.name": {"grid": ["digits", "synthetic"]}}),
         ("search.data.name:", "dataset is loaded once per node")),
    Case("search_seed", space({"seed": {"grid": [0, 1]}}), ("search.seed:", "top-level `seeds:`")),
    Case("search_empty", space({}), ("search: empty",)),
    Case("search_missing", space(search=DROP), ("search: empty",)),
    Case("search_not_mapping", space(search=["head.kind"]), ("search: expected a mapping",)),
    # distributions
    Case("dist_not_mapping", space({"head.kind": ["dense"]}), ("search.head.kind: expected a mapping",)),
    Case("dist_bad_kind", space({"head.kind": {"gird": ["dense"]}}),
         ("search.head.kind.gird: unknown key", "did you mean grid?")),
    Case("grid_not_list", space({"head.kind": {"grid": "dense"}}), ("search.head.kind.grid: expected a non-empty list",)),
    Case("grid_empty", space({"head.kind": {"grid": []}}), ("search.head.kind.grid: expected a non-empty list",)),
    Case("grid_value_invalid", space({"head.kind": {"grid": ["dense", "moe"]}}),
         ("head.kind: unknown value 'moe'", "dense, soft, sparse")),
    Case("uniform_low_ge_high", space({"head.dropout": {"uniform": [0.5, 0.1]}}),
         ("search.head.dropout.uniform: low must be < high",)),
    Case("uniform_one_bound", space({"head.dropout": {"uniform": [0.5]}}),
         ("search.head.dropout.uniform: expected [low, high]",)),
    Case("loguniform_zero_low", space({"head.balance_weight": {"loguniform": [0, 0.1]}}),
         ("search.head.balance_weight.loguniform: loguniform bounds must be > 0",)),
    Case("randint_float_bounds", space({"head.num_experts": {"randint": [1.5, 4]}}),
         ("search.head.num_experts.randint: randint bounds must be integers",)),
    Case("randint_string_bounds", space({"head.num_experts": {"randint": ["a", 4]}}),
         ("search.head.num_experts.randint: bounds must be numbers",)),
    Case("two_distributions", space({"head.kind": {"grid": ["dense"], "choice": ["sparse"]}}),
         ("search.head.kind: needs exactly one distribution",)),
    Case("float_dist_on_int_key", space({"head.hidden": {"uniform": [8, 64]}}, search_alg="optuna", num_samples=2),
         ("search.head.hidden",)),
    # conditions
    Case("unknown_key_in_dist", space(top_k_search(grid=[1, 2], wen={"head.kind": ["sparse"]})),
         ("search.head.top_k.wen: unknown key", "did you mean when?")),
    Case("when_unknown_key", space(top_k_search(grid=[1, 2], when={"head.knd": ["sparse"]})),
         ("search.head.top_k.when.head.knd: condition names an unknown key", "did you mean head.kind?")),
    Case("when_not_mapping", space(top_k_search(grid=[1, 2], when="sparse")),
         ("search.head.top_k.when: expected a mapping",)),
    Case("when_searched_later",
         space({"head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}, **SPARSE_TOPK}),
         ("search.head.top_k.when.head.kind:", "searched later")),
    Case("top_k_over_num_experts",
         space({"head.kind": {"grid": ["sparse"]}, "head.num_experts": {"grid": [1, 4]}, "head.top_k": {"grid": [2]}}),
         ("head.top_k: must be in 1..num_experts (1), got 2", "head.num_experts=1")),
    # seeds
    Case("seeds_zero", space(seeds=0), ("seeds: must be >= 1",)),
    Case("seeds_negative", space(seeds=-2), ("seeds: must be >= 1",)),
    Case("seeds_negative_in_list", space(seeds=[0, -1]), ("seeds:",)),
    Case("seeds_duplicate", space(seeds=[0, 1, 0]), ("seeds: seeds must be distinct",)),
    Case("seeds_strings", space(seeds=["a", "b"]), ("seeds: expected a positive int or a non-empty list",)),
    Case("seeds_empty_list", space(seeds=[]), ("seeds: expected a positive int or a non-empty list",)),
    Case("seeds_bool", space(seeds=True), ("seeds: expected a positive int or a non-empty list",)),
    # algorithm, scheduler, metric
    Case("search_alg_unknown", space(search_alg="bayes"), ("search_alg: unknown value 'bayes'", "grid, random, optuna")),
    Case("num_samples_zero", space(num_samples=0), ("num_samples: must be an int >= 1",)),
    Case("max_concurrent_zero", space(max_concurrent=0), ("max_concurrent: must be an int >= 1",)),
    Case("scheduler_unknown", space(scheduler={"kind": "hyperband"}), ("scheduler.kind: unknown value 'hyperband'", "fifo, asha")),
    Case("scheduler_unknown_string", space(scheduler="pbt"), ("scheduler.kind: unknown value 'pbt'",)),
    Case("scheduler_reduction_factor", space(scheduler={"kind": "asha", "reduction_factor": 1}),
         ("scheduler.reduction_factor: must be >= 2",)),
    Case("scheduler_unknown_key", space(scheduler={"kind": "asha", "grace": 2}),
         ("scheduler.grace: unknown key", "grace_period")),
    Case("metric_unknown", space(metric="accuracy"), ("metric: unknown metric 'accuracy'", "val_acc")),
    Case("mode_unknown", space(mode="maximize"), ("mode: unknown value 'maximize'", "max or min")),
    # resources
    Case("resources_negative_gpu", space(resources={"cpu": 1, "gpu": -1}), ("resources.gpu: must be >= 0",)),
    Case("resources_unknown_key", space(resources={"cpu": 1, "gpus": 1}), ("resources.gpus: unknown key", "did you mean gpu?")),
    Case("resources_gpu_fraction_above_one", space(resources={"gpu": 1.5}), ("resources.gpu: fractions above 1",)),
    Case("resources_cpu_not_number", space(resources={"cpu": "lots"}), ("resources.cpu",)),
    Case("override_negative_gpu", space(resources=override(when={"head.kind": ["sparse"]}, gpu=-0.5)),
         ("resources.overrides[0].gpu",)),
    Case("override_gpu_not_number", space(resources=override(when={"head.kind": ["sparse"]}, gpu="lots")),
         ("resources.overrides[0].gpu",)),
    Case("override_unknown_when_key", space(resources=override(when={"head.experts": [16]}, gpu=0.5)),
         ("resources.overrides[0].when.head.experts: condition names an unknown key", "head.num_experts")),
    Case("override_without_when", space(resources=override(gpu=0.5)), ("resources.overrides[0]: expected {when",)),
    Case("analysis_resources_unknown_key", space(analysis_resources={"cpus": 1}), ("analysis_resources.cpus: unknown key",)),
    # analysis and base
    Case("analysis_unknown_key", space(analysis={"whatt": ["latency"]}), ("analysis.whatt: unknown key", "what")),
    Case("analysis_unknown_what", space(analysis={"what": ["hessian"]}), ("analysis.what: unknown analysis 'hessian'",)),
    Case("analysis_samples_zero", space(analysis={"samples": 0}), ("analysis.samples: must be >= 1",)),
    Case("base_unknown_key", space(base=base_with("head", topk=1)), ("base.head.topk: unknown key", "top_k")),
    Case("base_bad_value", space(base=base_with("head", kind="moe")), ("head.kind: unknown value 'moe'",)),
    Case("base_not_mapping", space(base="digits"), ("base: expected a mapping",)),
    Case("base_empty_list", space(base=[]), ("base: expected a mapping",)),
]


def write_case(tmp_path: Path, case: Case) -> Path:
    p = tmp_path / "space.yaml"
    if isinstance(case.payload, dict):
        p.write_text(yaml.safe_dump(case.payload, sort_keys=False))
    elif isinstance(case.payload, str):
        p.write_text(case.payload)
    elif isinstance(case.payload, bytes):
        p.write_bytes(case.payload)
    return p


def params(file_check: bool) -> list:
    out = []
    for c in CASES:
        out.append(pytest.param(c, id=c.id))
    return out


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Ray must not start during validation; run in a scratch cwd so nothing lands in the repo."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("ray.init called: validation must finish before Ray starts")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the plan line at the terminal width
    monkeypatch.chdir(tmp_path)
    yield
    assert not ray.is_initialized()


def launch_dry_run(space_path: Path, capsys: pytest.CaptureFixture) -> tuple[int, list[str], str]:
    rc = main(["launch", "--space", str(space_path), "--dry-run"])
    captured = capsys.readouterr()
    return rc, captured.err.strip().splitlines(), captured.out


def error_line(tmp_path: Path, case: Case, capsys: pytest.CaptureFixture) -> tuple[Path, str]:
    path = write_case(tmp_path, case)
    rc, err, _ = launch_dry_run(path, capsys)
    assert rc == 2
    assert len(err) == 1, f"expected one stderr line, got {err}"
    assert err[0].startswith("moesweep: error: ")
    return path, err[0]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize("case", params(file_check=False))
def test_malformed_space_is_one_line_exit_2(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, line = error_line(tmp_path, case, capsys)
    for fragment in case.fragments:
        assert fragment in line


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize("case", params(file_check=True))
def test_error_line_names_the_space_file_once(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, line = error_line(tmp_path, case, capsys)
    assert line.count(str(path)) == 1, line


@pytest.mark.usefixtures("no_ray")
def test_quick_space_dry_run_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, out = launch_dry_run(REPO / "search_spaces" / "quick.yaml", capsys)
    assert rc == 0
    text = " ".join(out.split())
    # dense and soft once each; sparse once per top_k in [1, 2] (top_k only applies to sparse); 2 seeds.
    assert "quick: 4 configurations x 2 seeds = 8 trials" in text
    assert "{'dense': 1, 'soft': 1, 'sparse': 2}" in text
    assert "grid/fifo" in text
    assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"


@pytest.mark.usefixtures("no_ray")
def test_valid_tmp_space_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_case(tmp_path, Case("valid", space(seeds=3), ()))
    rc, _, out = launch_dry_run(path, capsys)
    assert rc == 0
    text = " ".join(out.split())
    assert "t: 3 configurations x 3 seeds = 9 trials" in text
    assert "{'dense': 1, 'sparse': 2}" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
