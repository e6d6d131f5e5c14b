"""Typed trial configuration: frozen dataclasses built from YAML/dicts.

YAML keys = dataclass fields = constructor arguments. ``from_dict`` rejects unknown keys with the full
key path and the closest valid name; ``__post_init__`` checks ranges. A trial config has five top-level
sections: ``data``, ``backbone``, ``head``, ``train`` and ``seed`` (so ``--set head.top_k=2`` works).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

DATASETS = ("cifar10", "digits", "synthetic")
BACKBONES = ("cnn", "resnet18")
HEAD_KINDS = ("dense", "soft", "sparse")
BALANCE_LOSSES = ("none", "kl_uniform", "shazeer", "switch")
DISPATCHES = ("batched", "naive")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key path."""


def _choice(path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: unknown value {value!r} (expected one of {', '.join(allowed)})")


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


@dataclass(frozen=True)
class DataCfg:
    name: str = "digits"
    root: str = "data"  # cifar10: directory holding cifar-10-batches-py/
    download: bool = False  # cifar10 only: fetch with torchvision when absent
    subset: int | None = None  # cap on images per split (train/val/test), for CPU runs
    val_size: int | float = 5000  # images held out of train for validation (or a fraction < 1)
    split_seed: int = 0  # fixed: the same split for every trial and seed
    # Random crop with padding + horizontal flip, training batches only. null = auto: on for cifar10,
    # off for digits/synthetic (8x8 digits are not mirror-symmetric and a 4-px crop destroys them).
    augment: bool | None = None
    crop_padding: int = 4
    flip: bool = True
    synthetic_size: int = 512  # synthetic: images per split
    synthetic_classes: int = 4
    synthetic_image_size: int = 8

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        if self.augment is None:
            object.__setattr__(self, "augment", self.name == "cifar10")
        _check(self.subset is None or self.subset > 0, "data.subset", "must be positive")
        _check(self.val_size > 0, "data.val_size", "must be positive")
        _check(self.crop_padding >= 0, "data.crop_padding", "must be >= 0")
        _check(self.synthetic_size > 0, "data.synthetic_size", "must be positive")
        _check(self.synthetic_classes >= 2, "data.synthetic_classes", "must be >= 2")
        _check(self.synthetic_image_size >= 4, "data.synthetic_image_size", "must be >= 4")


@dataclass(frozen=True)
class BackboneCfg:
    name: str = "cnn"
    width: int = 16  # cnn: channels of the first block (doubled per block)

    def __post_init__(self) -> None:
        _choice("backbone.name", self.name, BACKBONES)
        _check(self.width > 0, "backbone.width", "must be positive")


@dataclass(frozen=True)
class HeadCfg:
    kind: str = "dense"
    hidden: int = 512  # dense MLP width; also the parameter budget for expert_hidden: auto
    num_experts: int = 8
    top_k: int = 2  # sparse only
    expert_hidden: int | str = "auto"  # int, or "auto": match the dense head's parameter count
    dropout: float = 0.0
    temperature: float = 1.0  # soft router softmax temperature
    noisy: bool = True  # sparse: Shazeer noisy gating (training only)
    noise_floor: float = 1e-2  # sparse: added to softplus(x W_noise)
    dispatch: str = "batched"  # sparse: batched (sort/gather) or naive (loop over experts)
    balance_loss: str = "kl_uniform"
    balance_weight: float = 0.01
    z_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        _choice("head.kind", self.kind, HEAD_KINDS)
        _choice("head.dispatch", self.dispatch, DISPATCHES)
        _choice("head.balance_loss", self.balance_loss, BALANCE_LOSSES)
        _check(self.hidden > 0, "head.hidden", "must be positive")
        _check(self.num_experts >= 1, "head.num_experts", "must be >= 1")
        _check(1 <= self.top_k <= self.num_experts, "head.top_k",
               f"must be in 1..num_experts ({self.num_experts}), got {self.top_k}")
        if isinstance(self.expert_hidden, str):
            _check(self.expert_hidden == "auto", "head.expert_hidden", "must be a positive int or 'auto'")
        else:
            _check(self.expert_hidden > 0, "head.expert_hidden", "must be positive")
        _check(0.0 <= self.dropout < 1.0, "head.dropout", "must be in [0, 1)")
        _check(self.temperature > 0, "head.temperature", "must be positive")
        _check(self.noise_floor >= 0, "head.noise_floor", "must be >= 0")
        _check(self.balance_weight >= 0, "head.balance_weight", "must be >= 0")
        _check(self.z_loss_weight >= 0, "head.z_loss_weight", "must be >= 0")


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 1024
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = (30, 40)
    gamma: float = 0.1
    warmup_epochs: int = 0  # cosine only
    bf16: bool = False  # autocast on CUDA only
    device: str = "auto"  # auto = CUDA if available else CPU
    threads: int | None = None  # torch intra-op threads on CPU (None: leave torch's default)

    def __post_init__(self) -> None:
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.device", self.device, DEVICES)
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be positive")
        _check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 < self.gamma <= 1, "train.gamma", "must be in (0, 1]")
        _check(all(m > 0 for m in self.milestones), "train.milestones", "must be positive epochs")
        _check(list(self.milestones) == sorted(self.milestones), "train.milestones", "must be increasing")
        _check(0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
               "train.warmup_epochs", "must be in [0, epochs)")
        _check(self.threads is None or self.threads >= 1, "train.threads", "must be >= 1")


@dataclass(frozen=True)
class TrialCfg:
    data: DataCfg = field(default_factory=DataCfg)
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    head: HeadCfg = field(default_factory=HeadCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) that ``from_dict`` reads back to an equal config."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def suggest(key: str, valid: list[str], prefix: str = "") -> str:
    """' (did you mean <prefix><closest>?)' or the list of valid keys."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {prefix}{close[0]}?)" if close else f" (valid keys: {', '.join(valid)})"


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Check/convert a YAML value to the annotated type; error names the key path."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(path, value, a)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(f"{path}[{i}]", v, inner) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - programming error


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with their full path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        kp = f"{path}.{key}" if path else str(key)
        if key not in valid:
            raise ConfigError(f"{kp}: unknown key{suggest(str(key), valid, f'{path}.' if path else '')}")
        kwargs[key] = _coerce(kp, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - defensive
        raise ConfigError(f"{path or 'config'}: {e}") from None


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (``16`` -> 16, ``[1, 2]`` -> list, ``sgd`` -> str)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``d['a']['b'] = value`` for ``dotted = 'a.b'`` (creating mappings as needed)."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings to a nested dict (returns a new dict)."""
    import copy

    out = copy.deepcopy(d)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"--set {ov!r}: expected key.path=value")
        key, text = ov.split("=", 1)
        set_path(out, key.strip(), parse_value(text))
    return out


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{p}: not readable as UTF-8 text ({type(e).__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None


def load_trial_cfg(path: str | Path | None = None, overrides: list[str] | None = None) -> TrialCfg:
    """Trial config from a YAML file (or defaults) plus ``--set`` overrides."""
    raw = load_yaml(path) if path is not None else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    return from_dict(TrialCfg, raw)
