"""TrialCfg parsing and rejection: unknown keys, types, ranges, `--set` overrides, YAML loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from moesweep.config import (
    ConfigError,
    TrialCfg,
    apply_overrides,
    from_dict,
    load_trial_cfg,
    load_yaml,
    to_dict,
)


def error_of(d: dict[str, Any]) -> str:
    """The ConfigError message ``from_dict(TrialCfg, d)`` raises (fails the test if none is raised)."""
    with pytest.raises(ConfigError) as info:
        from_dict(TrialCfg, d)
    msg = str(info.value)
    assert "\n" not in msg, "a config error is one line"
    return msg


# ------------------------------------------------------------------------------------ unknown keys

TYPOS = [  # (config dict, full path of the typo, full path of the closest valid key)
    ({"head": {"topk": 2}}, "head.topk", "head.top_k"),
    ({"train": {"optimzer": "sgd"}}, "train.optimzer", "train.optimizer"),
    ({"data": {"nmae": "digits"}}, "data.nmae", "data.name"),
    ({"backbone": {"widht": 8}}, "backbone.widht", "backbone.width"),
]


@pytest.mark.parametrize("d, typo, _", TYPOS, ids=[t[1] for t in TYPOS])
def test_unknown_key_names_its_full_path(d: dict, typo: str, _: str) -> None:
    msg = error_of(d)
    assert msg.startswith(f"{typo}: unknown key")
    assert "did you mean" in msg


@pytest.mark.parametrize("d, typo, suggestion", TYPOS, ids=[t[1] for t in TYPOS])
def test_unknown_key_suggests_the_full_path(d: dict, typo: str, suggestion: str) -> None:
    assert error_of(d) == f"{typo}: unknown key (did you mean {suggestion}?)"


def test_unknown_top_level_key_suggests_the_section() -> None:
    assert error_of({"haed": {}}) == "haed: unknown key (did you mean head?)"


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    msg = error_of({"head": {"zzzzzz": 1}})
    assert msg.startswith("head.zzzzzz: unknown key (valid keys: ")
    for field in ("kind", "top_k", "num_experts", "balance_weight"):
        assert field in msg


# -------------------------------------------------------------------------------------- type errors


@pytest.mark.parametrize("d, fragment", [
    ({"head": {"num_experts": "8"}}, "head.num_experts: expected an integer, got '8'"),
    ({"head": {"top_k": True}}, "head.top_k: expected an integer, got True"),  # bool is not an int
    ({"head": {"num_experts": 8.5}}, "head.num_experts: expected an integer"),
    ({"head": {"noisy": 1}}, "head.noisy: expected true/false"),
    ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
    ({"train": {"lr": True}}, "train.lr: expected a number"),
    ({"train": {"milestones": 30}}, "train.milestones: expected a list"),
    ({"train": {"milestones": [30, "x"]}}, "train.milestones[1]: expected an integer"),
    ({"head": {"kind": 3}}, "head.kind: expected a string"),
    ({"data": {"augment": "yes"}}, "data.augment: expected bool or null"),
    ({"head": 3}, "head: expected a mapping"),
    ({"seed": "0"}, "seed: expected an integer"),
])
def test_type_errors_name_the_key(d: dict, fragment: str) -> None:
    assert fragment in error_of(d)


def test_yaml_numbers_are_coerced_where_lossless() -> None:
    # 8.0 is a whole number; "1e-3" is how YAML 1.1 reads 1e-3 (a string), a valid float.
    cfg = from_dict(TrialCfg, {"head": {"num_experts": 8.0}, "train": {"lr": "1e-3"}})
    assert cfg.head.num_experts == 8 and isinstance(cfg.head.num_experts, int)
    assert cfg.train.lr == pytest.approx(1e-3)


# ------------------------------------------------------------------------------------- range checks


@pytest.mark.parametrize("head, fragment", [
    ({"top_k": 0}, "head.top_k: must be in 1..num_experts (8), got 0"),
    ({"num_experts": 4, "top_k": 5}, "head.top_k: must be in 1..num_experts (4), got 5"),
    ({"num_experts": 0, "top_k": 1}, "head.num_experts: must be >= 1"),
    ({"hidden": 0}, "head.hidden: must be positive"),
    ({"expert_hidden": 0}, "head.expert_hidden: must be positive"),
    ({"expert_hidden": "big"}, "head.expert_hidden: must be a positive int or 'auto'"),
    ({"balance_weight": -0.1}, "head.balance_weight: must be >= 0"),
    ({"z_loss_weight": -1.0}, "head.z_loss_weight: must be >= 0"),
    ({"dropout": 1.0}, "head.dropout: must be in [0, 1)"),
    ({"dropout": -0.1}, "head.dropout: must be in [0, 1)"),
    ({"temperature": 0.0}, "head.temperature: must be positive"),
])
def test_head_ranges(head: dict, fragment: str) -> None:
    assert error_of({"head": head}) == fragment


@pytest.mark.parametrize("d, fragment", [
    ({"backbone": {"width": 0}}, "backbone.width: must be positive"),
    ({"backbone": {"width": -8}}, "backbone.width: must be positive"),
    ({"train": {"epochs": 0}}, "train.epochs: must be >= 1"),
    ({"train": {"lr": 0}}, "train.lr: must be positive"),
    ({"train": {"milestones": [40, 30]}}, "train.milestones: must be increasing"),
    ({"data": {"subset": 0}}, "data.subset: must be positive"),
])
def test_other_ranges(d: dict, fragment: str) -> None:
    assert error_of(d) == fragment


def test_range_edges_are_accepted() -> None:
    # Inclusive ends: top_k == num_experts, balance_weight == 0, dropout == 0.
    cfg = from_dict(TrialCfg, {"head": {"num_experts": 4, "top_k": 4, "balance_weight": 0.0, "dropout": 0.0}})
    assert (cfg.head.top_k, cfg.head.balance_weight, cfg.head.dropout) == (4, 0.0, 0.0)


@pytest.mark.parametrize("d, path, names", [
    ({"head": {"kind": "moe"}}, "head.kind", ["dense", "soft", "sparse"]),
    ({"head": {"balance_loss": "aux"}}, "head.balance_loss", ["none", "kl_uniform", "shazeer", "switch"]),
    ({"head": {"dispatch": "fast"}}, "head.dispatch", ["batched", "naive"]),
    ({"data": {"name": "mnist"}}, "data.name", ["cifar10", "digits", "synthetic"]),
    ({"backbone": {"name": "vit"}}, "backbone.name", ["cnn", "resnet18"]),
    ({"train": {"optimizer": "adam"}}, "train.optimizer", ["sgd", "adamw"]),
])
def test_unknown_names_list_the_known_ones(d: dict, path: str, names: list[str]) -> None:
    msg = error_of(d)
    assert msg.startswith(f"{path}: unknown value")
    for n in names:
        assert n in msg


# ------------------------------------------------------------------------------------ --set overrides


def test_overrides_parse_values_as_yaml() -> None:
    d = apply_overrides({"head": {"kind": "sparse"}}, [
        "head.top_k=1", "train.milestones=[5, 8]", "head.noisy=false", "data.subset=null",
        "head.expert_hidden=auto", "train.lr=1e-3", "seed = 3"])
    assert d["head"] == {"kind": "sparse", "top_k": 1, "noisy": False, "expert_hidden": "auto"}
    assert d["train"]["milestones"] == [5, 8] and d["data"]["subset"] is None and d["seed"] == 3
    cfg = from_dict(TrialCfg, d)
    assert cfg.train.milestones == (5, 8) and cfg.train.lr == pytest.approx(1e-3) and cfg.seed == 3


def test_overrides_do_not_mutate_their_input() -> None:
    base = {"head": {"top_k": 2}}
    out = apply_overrides(base, ["head.top_k=1"])
    assert base == {"head": {"top_k": 2}} and out == {"head": {"top_k": 1}}


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"--set 'head.top_k': expected key.path=value"):
        apply_overrides({}, ["head.top_k"])


def test_override_into_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"seed.x: seed is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_override_with_a_typo_fails_on_the_typo() -> None:
    with pytest.raises(ConfigError, match=r"^head\.topk: unknown key"):
        load_trial_cfg(None, ["head.topk=2"])


def test_load_trial_cfg_applies_overrides_on_top_of_the_file(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("head: {kind: sparse, num_experts: 4, top_k: 1}\ntrain: {epochs: 3}\n")
    cfg = load_trial_cfg(p, ["head.top_k=2"])
    assert (cfg.head.kind, cfg.head.num_experts, cfg.head.top_k, cfg.train.epochs) == ("sparse", 4, 2, 3)


# -------------------------------------------------------------------------------------- round trip


def non_default_cfg() -> TrialCfg:
    """A config that differs from the defaults in every section and in each value type."""
    return from_dict(TrialCfg, {
        "data": {"name": "synthetic", "subset": 64, "val_size": 0.2, "augment": True, "synthetic_classes": 3},
        "backbone": {"name": "cnn", "width": 8},
        "head": {"kind": "sparse", "num_experts": 4, "top_k": 1, "expert_hidden": 24, "noisy": False,
                 "dispatch": "naive", "balance_loss": "switch", "balance_weight": 0.1, "dropout": 0.25},
        "train": {"epochs": 2, "optimizer": "adamw", "schedule": "multistep", "milestones": [1], "threads": 1},
        "seed": 7,
    })


@pytest.mark.parametrize("make", [TrialCfg, non_default_cfg], ids=["defaults", "non_default"])
def test_round_trip_through_dict_and_yaml(make) -> None:
    cfg = make()
    d = to_dict(cfg)
    assert d == cfg.to_dict()
    assert isinstance(d["train"]["milestones"], list), "tuples become lists so YAML/JSON can hold them"
    assert from_dict(TrialCfg, d) == cfg
    assert from_dict(TrialCfg, yaml.safe_load(yaml.safe_dump(d))) == cfg


def test_configs_are_frozen() -> None:
    cfg = TrialCfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.head.top_k = 1  # type: ignore[misc]


# ------------------------------------------------------------------------------------- YAML loading


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_yaml(p)
    assert str(info.value) == f"{p}: no such file"


@pytest.mark.parametrize("text, line", [("a: [1, 2\nb: 3\n", 2), ("a: b: c\n", 1)])
def test_load_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_yaml(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: line {line} invalid YAML (")
    assert "\n" not in msg


def test_load_yaml_binary_file_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(ConfigError, match="binary.yaml"):
        load_yaml(p)


def test_load_trial_cfg_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- head\n- train\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at the top level"):
        load_trial_cfg(p)


def test_load_trial_cfg_empty_file_means_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing but a comment\n")
    assert load_trial_cfg(p) == TrialCfg()


# --------------------------------------------------------------------------------- data.augment auto


@pytest.mark.parametrize("name, expected", [("cifar10", True), ("digits", False), ("synthetic", False)])
def test_augment_auto_resolves_per_dataset(name: str, expected: bool) -> None:
    for d in ({"name": name}, {"name": name, "augment": None}):  # absent and explicit null alike
        assert from_dict(TrialCfg, {"data": d}).data.augment is expected


@pytest.mark.parametrize("name, explicit", [("cifar10", False), ("digits", True), ("synthetic", True)])
def test_augment_explicit_value_is_kept(name: str, explicit: bool) -> None:
    cfg = from_dict(TrialCfg, {"data": {"name": name, "augment": explicit}})
    assert cfg.data.augment is explicit
    assert to_dict(cfg)["data"]["augment"] is explicit, "the resolved value is what gets saved"
