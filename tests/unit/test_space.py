"""Space expansion: grid with conditions, seeded random sampling, ids, corners, resources, plan, optuna."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from moesweep.config import ConfigError, to_dict
from moesweep.sweep import space as space_mod
from moesweep.sweep.space import (
    config_id,
    corner_points,
    expand_points,
    optuna_space,
    plan,
    trial_cfg,
    trial_id,
    validate,
)
from moesweep.sweep.spec import Resources, SweepSpec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
BASE = {"data": {"name": "synthetic"}, "backbone": {"name": "cnn", "width": 8},
        "head": {"kind": "sparse", "hidden": 16, "num_experts": 4, "top_k": 1}}


def spec_of(search: dict[str, Any], **top: Any) -> SweepSpec:
    return parse_spec({"name": "t", "base": BASE, "search": search, **top})


QUICK = REPO / "search_spaces" / "quick.yaml"


@pytest.fixture(scope="module")
def quick() -> SweepSpec:
    return load_spec(QUICK)


RANDOM_SEARCH = {
    "head.dropout": {"uniform": [0.1, 0.5]},
    "head.balance_weight": {"loguniform": [1.0e-4, 1.0]},
    "head.hidden": {"randint": [8, 12]},  # high exclusive: 8..11
}


# -------------------------------------------------------------------------------------------- grid


def test_quick_grid_gives_dense_no_top_k_multiplicity(quick: SweepSpec) -> None:
    # top_k applies to sparse only, so dense and soft appear once each: 1 + 1 + 2 = 4 configurations.
    assert expand_points(quick) == [
        {"head.kind": "dense"}, {"head.kind": "soft"},
        {"head.kind": "sparse", "head.top_k": 1}, {"head.kind": "sparse", "head.top_k": 2},
    ]


def test_condition_sees_the_base_config_when_the_key_is_not_searched() -> None:
    search = {"head.num_experts": {"grid": [4, 8]},
              "head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}}}
    # head.kind is sparse in BASE and not searched: the top_k condition holds for every point.
    assert len(expand_points(spec_of(search))) == 4
    # ... and with a dense base it holds for none.
    dense = parse_spec({"name": "t", "base": {**BASE, "head": {**BASE["head"], "kind": "dense"}}, "search": search})
    assert expand_points(dense) == [{"head.num_experts": 4}, {"head.num_experts": 8}]


def test_grid_values_resolving_to_the_same_config_are_deduplicated() -> None:
    # 16 and 16.0 are the same int after coercion, so one configuration, not two.
    s = spec_of({"head.hidden": {"grid": [16, 16.0, 32]}})
    assert [p["head.hidden"] for p in expand_points(s)] == [16, 32]


def test_condition_order_is_enforced() -> None:
    s = spec_of({"head.top_k": {"grid": [1, 2], "when": {"head.kind": ["sparse"]}},
                 "head.kind": {"grid": ["dense", "sparse"]}})
    with pytest.raises(ConfigError, match=r"^search\.head\.top_k\.when\.head\.kind: .*searched later"):
        expand_points(s)


# ------------------------------------------------------------------------------------------ random


def test_random_sampling_is_deterministic() -> None:
    s = spec_of(RANDOM_SEARCH, search_alg="random", num_samples=20)
    first = expand_points(s)
    assert first == expand_points(s)
    assert len(first) == 20
    assert first != expand_points(s, seed=1), "the expansion seed changes the draw"


def test_random_samples_stay_within_bounds() -> None:
    pts = expand_points(spec_of(RANDOM_SEARCH, search_alg="random", num_samples=60))
    drop = [p["head.dropout"] for p in pts]
    bw = [p["head.balance_weight"] for p in pts]
    hid = [p["head.hidden"] for p in pts]
    assert all(0.1 <= v <= 0.5 for v in drop)
    assert all(1e-4 <= v <= 1.0 for v in bw)
    assert set(hid) <= {8, 9, 10, 11} and all(isinstance(v, int) for v in hid)
    assert {8, 11} <= set(hid), "both ends of a randint range are drawn, the high bound never"


def test_loguniform_is_uniform_in_log_space() -> None:
    # On [1e-4, 1] the median of a log-uniform draw is 1e-2; a linear-uniform draw would put ~99% of
    # samples above 1e-2. With 100 deterministic draws expect a fraction near 0.5 below it.
    pts = expand_points(spec_of({"head.balance_weight": {"loguniform": [1e-4, 1.0]}},
                                search_alg="random", num_samples=100))
    below = sum(p["head.balance_weight"] < 1e-2 for p in pts) / len(pts)
    assert 0.35 < below < 0.65


def test_grid_keys_are_crossed_with_each_random_draw() -> None:
    s = spec_of({"head.kind": {"grid": ["soft", "sparse"]}, "head.dropout": {"uniform": [0.0, 0.5]}},
                search_alg="random", num_samples=3)
    pts = expand_points(s)
    assert len(pts) == 6
    assert [p["head.kind"] for p in pts] == ["soft", "sparse"] * 3


# --------------------------------------------------------------------------------------------- ids


def test_config_id_same_across_seeds_distinct_across_configs(quick: SweepSpec) -> None:
    pts = expand_points(quick)
    ids = [config_id(quick, p) for p in pts]
    assert len(set(ids)) == len(ids)
    for p in pts:
        # The id hashes the resolved config without its seed: every seed's config is the same but for it.
        a, b = to_dict(trial_cfg(quick, p, quick.seeds[0])), to_dict(trial_cfg(quick, p, quick.seeds[1]))
        assert a.pop("seed") != b.pop("seed") and a == b
    other_seeds = parse_spec({**yaml.safe_load(QUICK.read_text()), "seeds": [5, 6, 7]})
    assert [config_id(other_seeds, p) for p in pts] == ids


def test_config_id_hashes_the_resolved_config() -> None:
    # Setting a key to the value the base already has names the same configuration.
    s = spec_of({"head.hidden": {"grid": [16, 32]}})
    assert config_id(s, {"head.hidden": 16}) == config_id(s, {})
    assert config_id(s, {"head.hidden": 32}) != config_id(s, {})


def test_trial_id_format(quick: SweepSpec) -> None:
    cid = config_id(quick, expand_points(quick)[0])
    assert re.fullmatch(r"[0-9a-f]{10}", cid)
    assert trial_id(cid, 3) == f"{cid}-s3"
    assert trial_id(cid, 0) != trial_id(cid, 1)


# ----------------------------------------------------------------------------------------- corners


def test_corner_points_cover_endpoints_and_respect_conditions() -> None:
    s = spec_of({"head.kind": {"grid": ["dense", "sparse"]},
                 "head.dropout": {"uniform": [0.1, 0.5]},
                 "head.top_k": {"randint": [1, 4], "when": {"head.kind": ["sparse"]}}})
    corners = corner_points(s)
    # dense: 2 dropout ends; sparse: 2 dropout ends x top_k in {1, 3} (randint high exclusive).
    assert len(corners) == 2 + 2 * 2
    assert {p["head.dropout"] for p in corners} == {0.1, 0.5}
    assert {p["head.top_k"] for p in corners if p["head.kind"] == "sparse"} == {1, 3}
    assert all("head.top_k" not in p for p in corners if p["head.kind"] == "dense")


def test_corner_explosion_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space_mod, "MAX_CORNERS", 5)
    s = spec_of({"head.hidden": {"grid": [8, 16, 32]}, "head.dropout": {"grid": [0.0, 0.1]}})
    with pytest.raises(ConfigError, match=r"^search: more than 5 corner combinations"):
        corner_points(s)


def test_validate_returns_points_and_catches_reachable_bad_values(quick: SweepSpec) -> None:
    assert validate(quick) == expand_points(quick)
    bad = spec_of({"head.num_experts": {"grid": [1, 4]}, "head.top_k": {"grid": [2]}})
    with pytest.raises(ConfigError, match=r"head\.top_k: must be in 1\.\.num_experts \(1\), got 2 \(reachable at "):
        validate(bad)


# --------------------------------------------------------------------------------------- resources


def test_resources_overrides() -> None:
    r = parse_spec({"name": "t", "search": {"head.num_experts": {"grid": [4, 16]}},
                    "resources": {"cpu": 1, "gpu": 0.25, "overrides": [
                        {"when": {"head.num_experts": [16]}, "gpu": 0.5},
                        {"when": {"head.num_experts": [16], "head.kind": ["sparse"]}, "cpu": 2, "gpu": 1}]}}).resources
    assert r.for_point({"head.num_experts": 4}) == {"cpu": 1.0, "gpu": 0.25}
    assert r.for_point({"head.num_experts": 16}) == {"cpu": 1.0, "gpu": 0.5}
    # both rules match: the later one wins
    assert r.for_point({"head.num_experts": 16, "head.kind": "sparse"}) == {"cpu": 2, "gpu": 1}
    assert Resources().for_point({"anything": 1}) == {"cpu": 1.0, "gpu": 0.0}


def test_resource_override_on_a_base_key_applies() -> None:
    s = spec_of({"head.num_experts": {"grid": [4, 16]}},
                resources={"cpu": 1, "gpu": 0.25, "overrides": [{"when": {"head.kind": ["sparse"]}, "gpu": 0.5}]})
    assert plan(s, expand_points(s))["resources"] == {"cpu=1 gpu=0.5": 2}


# -------------------------------------------------------------------------------------------- plan


def test_plan_counts(quick: SweepSpec) -> None:
    p = plan(quick, expand_points(quick))
    assert p["configurations"] == 4 and p["seeds"] == [0, 1] and p["trials"] == 8
    assert p["per_head"] == {"dense": 1, "soft": 1, "sparse": 2}
    assert p["resources"] == {"cpu=1 gpu=0": 4}
    assert (p["search_alg"], p["scheduler"]) == ("grid", "fifo")


def test_plan_groups_resources() -> None:
    s = spec_of({"head.kind": {"grid": ["dense", "sparse"]}, "head.num_experts": {"grid": [4, 16]}},
                seeds=3, resources={"cpu": 1, "gpu": 0.25,
                                    "overrides": [{"when": {"head.num_experts": [16]}, "gpu": 0.5}]})
    p = plan(s, expand_points(s))
    assert p["configurations"] == 4 and p["trials"] == 12
    assert p["per_head"] == {"dense": 2, "sparse": 2}
    assert p["resources"] == {"cpu=1 gpu=0.25": 2, "cpu=1 gpu=0.5": 2}


def test_plan_for_optuna_counts_samples() -> None:
    s = spec_of(RANDOM_SEARCH, search_alg="optuna", num_samples=7, seeds=[0, 1])
    p = plan(s, corner_points(s))
    assert (p["configurations"], p["trials"], p["per_head"]) == (7, 14, {})


# ------------------------------------------------------------------------------------------ optuna


class FakeTrial:
    """Records suggest_* calls like an optuna Trial; categorical answers come from ``choose``."""

    def __init__(self, choose: dict[str, Any]) -> None:
        self.choose, self.calls = choose, []

    def suggest_categorical(self, name: str, choices: list) -> Any:
        self.calls.append(("categorical", name, tuple(choices)))
        return self.choose.get(name, choices[0])

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.calls.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.calls.append(("int", name, low, high))
        return low


OPTUNA_SEARCH = {
    "head.kind": {"choice": ["dense", "sparse"]},
    "head.top_k": {"randint": [1, 3], "when": {"head.kind": ["sparse"]}},
    "head.balance_weight": {"loguniform": [1e-3, 1e-1], "when": {"head.kind": ["sparse"]}},
    "head.dropout": {"uniform": [0.0, 0.5]},
}


def test_optuna_space_suggests_conditional_keys_only_where_they_apply() -> None:
    define = optuna_space(spec_of(OPTUNA_SEARCH, search_alg="optuna", num_samples=4))
    sparse = FakeTrial({"head.kind": "sparse"})
    assert define(sparse) is None  # define-by-run: no constant-liar dict returned
    assert sparse.calls == [
        ("categorical", "head.kind", ("dense", "sparse")),
        ("int", "head.top_k", 1, 2),  # randint high is exclusive; suggest_int's is inclusive
        ("float", "head.balance_weight", 1e-3, 1e-1, True),
        ("float", "head.dropout", 0.0, 0.5, False),
    ]
    dense = FakeTrial({"head.kind": "dense"})
    define(dense)
    assert [c[1] for c in dense.calls] == ["head.kind", "head.dropout"]
