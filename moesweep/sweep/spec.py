"""Search-space YAML -> typed ``SweepSpec`` (no Ray here: the spec is validated before Ray starts).

Format (see search_spaces/*.yaml)::

    name: quick
    base: {data: ..., backbone: ..., head: ..., train: ...}   # a full trial config
    search:
      head.kind: {grid: [dense, soft, sparse]}
      head.top_k: {grid: [1, 2], when: {head.kind: [sparse]}}  # applies to sparse heads only
      head.balance_weight: {loguniform: [1.0e-3, 1.0e-1], when: {head.kind: [soft, sparse]}}
    seeds: [0, 1, 2]            # or an int n -> 0..n-1
    search_alg: grid            # grid | random | optuna
    num_samples: 1              # random/optuna: configurations drawn; grid: repeats of the grid's random keys
    scheduler: {kind: fifo}     # or {kind: asha, grace_period: 2, reduction_factor: 2}
    metric: val_acc
    mode: max
    resources: {cpu: 1, gpu: 0, overrides: [{when: {head.num_experts: [16]}, gpu: 0.5}]}
    analysis_resources: {cpu: 1, gpu: 0}
    max_concurrent: 2
    analysis: {what: [sharpness, landscape, latency], top: 1, samples: 512}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesweep.config import ConfigError, TrialCfg, suggest, from_dict, load_yaml

DIST_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCH_ALGS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha")
ANALYSES = ("sharpness", "landscape", "latency")
# data keys that may vary per trial: they act on batches, not on the stored dataset (loaded once per node)
SEARCHABLE_DATA_KEYS = ("data.augment", "data.crop_padding", "data.flip")


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


@dataclass(frozen=True)
class Dist:
    """One searched key: a grid/choice of values or a numeric range, optionally conditional."""

    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    when: tuple[tuple[str, tuple], ...] = ()  # ((key, allowed values), ...), all must hold

    @property
    def is_finite(self) -> bool:
        return self.kind in ("grid", "choice")

    def applies(self, point: dict[str, Any]) -> bool:
        return all(point.get(k) in allowed for k, allowed in self.when)


@dataclass(frozen=True)
class ResourceRule:
    when: tuple[tuple[str, tuple], ...]
    cpu: float | None = None
    gpu: float | None = None


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0
    overrides: tuple[ResourceRule, ...] = ()

    def for_point(self, point: dict[str, Any]) -> dict[str, float]:
        """Resources of one configuration: later matching overrides win (e.g. more GPU for more experts)."""
        cpu, gpu = self.cpu, self.gpu
        for r in self.overrides:
            if all(point.get(k) in allowed for k, allowed in r.when):
                cpu = r.cpu if r.cpu is not None else cpu
                gpu = r.gpu if r.gpu is not None else gpu
        return {"cpu": cpu, "gpu": gpu}


@dataclass(frozen=True)
class SchedulerCfg:
    kind: str = "fifo"
    grace_period: int = 1
    reduction_factor: int = 2
    max_t: int | None = None  # default: train.epochs of the base config

    def __post_init__(self) -> None:
        _check(self.kind in SCHEDULERS, "scheduler.kind", f"unknown value {self.kind!r} (expected one of {', '.join(SCHEDULERS)})")
        _check(self.grace_period >= 1, "scheduler.grace_period", "must be >= 1")
        _check(self.reduction_factor >= 2, "scheduler.reduction_factor", "must be >= 2")
        _check(self.max_t is None or self.max_t >= 1, "scheduler.max_t", "must be >= 1")


@dataclass(frozen=True)
class AnalysisCfg:
    what: tuple[str, ...] = ANALYSES
    top: int = 1  # configurations analysed per head kind (all their seeds)
    splits: tuple[str, ...] = ("train", "test")
    samples: int = 4096  # images per split for sharpness and landscape (capped by the split size)
    batch_size: int = 512
    param_sets: tuple[str, ...] = ("all", "head")
    top_eigs: int = 5
    lanczos_iters: int = 30
    probes: int = 100
    slq_vectors: int = 4
    directions: int = 3  # filter-normalised random directions
    points: int = 21  # alphas in [-radius, radius]
    radius: float = 0.5
    gaussian_sigma: float = 1e-3
    latency_batch_sizes: tuple[int, ...] = (1, 8, 32, 128, 512, 1024)
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        for w in self.what:
            _check(w in ANALYSES, "analysis.what", f"unknown analysis {w!r} (expected {', '.join(ANALYSES)})")
        for s in self.splits:
            _check(s in ("train", "val", "test"), "analysis.splits", f"unknown split {s!r} (train, val, test)")
        for p in self.param_sets:
            _check(p in ("all", "head", "backbone"), "analysis.param_sets", f"unknown parameter set {p!r} (all, head, backbone)")
        for k in ("top", "samples", "batch_size", "top_eigs", "lanczos_iters", "probes", "slq_vectors",
                  "directions", "points", "latency_repeats"):
            _check(getattr(self, k) >= 1, f"analysis.{k}", "must be >= 1")
        _check(self.points >= 3 and self.points % 2 == 1, "analysis.points", "must be odd and >= 3 (alpha = 0 is a grid point)")
        _check(self.lanczos_iters >= self.top_eigs, "analysis.lanczos_iters", "must be >= top_eigs")
        _check(self.radius > 0 and self.gaussian_sigma > 0, "analysis.radius", "radius and gaussian_sigma must be positive")
        _check(all(b >= 1 for b in self.latency_batch_sizes), "analysis.latency_batch_sizes", "must be positive")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    search: dict[str, Dist]
    seeds: tuple[int, ...] = (0,)
    search_alg: str = "grid"
    num_samples: int = 1
    scheduler: SchedulerCfg = field(default_factory=SchedulerCfg)
    metric: str = "val_acc"
    mode: str = "max"
    resources: Resources = field(default_factory=Resources)
    analysis_resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    analysis: AnalysisCfg = field(default_factory=AnalysisCfg)
    fault_injection: dict[str, Any] = field(default_factory=dict)  # tests only: {fail_once_at_epoch, marker_dir}

    @property
    def base_cfg(self) -> TrialCfg:
        return from_dict(TrialCfg, self.base)


TOP_KEYS = [f.name for f in dataclasses.fields(SweepSpec)]
METRICS = ("val_acc", "val_loss", "best_val_acc", "train_acc", "train_loss")


def _trial_key_paths(cls: type = TrialCfg, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if sub is not None and dataclasses.is_dataclass(sub):
            out += _trial_key_paths(sub, path + ".")
        else:
            out.append(path)
    return out


TRIAL_KEYS = _trial_key_paths()


def _int_keys(cls: type = TrialCfg, prefix: str = "") -> dict[str, bool]:
    """Dotted key -> True where the field holds an int only (a float value would be rejected)."""
    import typing

    out: dict[str, bool] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_int_keys(tp, f"{prefix}{f.name}."))
        else:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            out[f"{prefix}{f.name}"] = tp is int or (bool(args) and all(a is int for a in args))
    return out


INT_KEYS = _int_keys()


def _when(path: str, raw: Any, known: list[str]) -> tuple[tuple[str, tuple], ...]:
    if raw is None:
        return ()
    _check(isinstance(raw, dict) and raw, path, "expected a mapping of key: [allowed values]")
    out = []
    for k, v in raw.items():
        _check(k in known, f"{path}.{k}", f"condition names an unknown key{suggest(str(k), known)}")
        vals = tuple(v) if isinstance(v, list) else (v,)
        _check(len(vals) > 0, f"{path}.{k}", "needs at least one allowed value")
        out.append((k, vals))
    return tuple(out)


def _dist(path: str, raw: Any, known: list[str]) -> Dist:
    _check(isinstance(raw, dict), path, f"expected a mapping like {{grid: [...]}}, got {raw!r}")
    kinds = [k for k in raw if k in DIST_KINDS]
    for k in raw:
        if k not in DIST_KINDS and k != "when":
            raise ConfigError(f"{path}.{k}: unknown key{suggest(str(k), list(DIST_KINDS) + ['when'])}")
    _check(len(kinds) == 1, path, f"needs exactly one distribution ({', '.join(DIST_KINDS)})")
    kind, val = kinds[0], raw[kinds[0]]
    when = _when(f"{path}.when", raw.get("when"), known)
    if kind in ("grid", "choice"):
        _check(isinstance(val, list) and len(val) > 0, f"{path}.{kind}", "expected a non-empty list of values")
        return Dist(kind, tuple(val), when=when)
    _check(isinstance(val, list) and len(val) == 2, f"{path}.{kind}", "expected [low, high]")
    try:
        low, high = (float(v) for v in val)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}.{kind}: bounds must be numbers, got {val!r}") from None
    _check(low < high, f"{path}.{kind}", f"low must be < high, got [{low}, {high}]")
    if kind == "loguniform":
        _check(low > 0, f"{path}.{kind}", "loguniform bounds must be > 0")
    if kind == "randint":
        _check(low.is_integer() and high.is_integer(), f"{path}.{kind}", "randint bounds must be integers (high exclusive)")
    return Dist(kind, (), low, high, when)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _amount(path: str, v: Any, kind: str) -> float:
    """A CPU or GPU amount: a number; cpu > 0; gpu >= 0 and a fraction only below 1."""
    _check(isinstance(v, (int, float)) and not isinstance(v, bool), path, f"expected a number, got {v!r}")
    v = float(v)
    if kind == "cpu":
        _check(v > 0, path, "must be > 0")
    else:
        _check(v >= 0, path, "must be >= 0")
        _check(v <= 1 or v.is_integer(), path, "fractions above 1 are not allowed (use whole GPUs)")
    return v


def _resources(path: str, raw: Any, known: list[str]) -> Resources:
    if raw is None:
        return Resources()
    _check(isinstance(raw, dict), path, "expected a mapping {cpu, gpu, overrides}")
    for k in raw:
        _check(k in ("cpu", "gpu", "overrides"), f"{path}.{k}", f"unknown key{suggest(str(k), ['cpu', 'gpu', 'overrides'])}")
    cpu = _amount(f"{path}.cpu", raw.get("cpu", 1), "cpu")
    gpu = _amount(f"{path}.gpu", raw.get("gpu", 0), "gpu")
    rules = []
    overrides = raw.get("overrides") or []
    _check(isinstance(overrides, list), f"{path}.overrides", "expected a list of {when, cpu, gpu}")
    for i, r in enumerate(overrides):
        p = f"{path}.overrides[{i}]"
        _check(isinstance(r, dict) and "when" in r, p, "expected {when: {...}, cpu/gpu: ...}")
        for k in r:
            _check(k in ("when", "cpu", "gpu"), f"{p}.{k}", f"unknown key{suggest(str(k), ['when', 'cpu', 'gpu'])}")
        rcpu = _amount(f"{p}.cpu", r["cpu"], "cpu") if r.get("cpu") is not None else None
        rgpu = _amount(f"{p}.gpu", r["gpu"], "gpu") if r.get("gpu") is not None else None
        rules.append(ResourceRule(_when(f"{p}.when", r["when"], known), rcpu, rgpu))
    return Resources(cpu, gpu, tuple(rules))


def parse_spec(raw: Any) -> SweepSpec:
    """Validate a whole space dict; every error is ``ConfigError("<key path>: <problem>")``."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level")
    for k in raw:
        _check(k in TOP_KEYS, str(k), f"unknown key{suggest(str(k), TOP_KEYS)}")
    _check("name" in raw and isinstance(raw["name"], str) and raw["name"].strip(), "name", "a non-empty string is required")
    name = raw["name"]
    _check(name[0].isalnum() and all(c.isalnum() or c in "-_." for c in name), "name",
           "start with a letter or digit; use letters, digits, '-', '_' or '.' only")
    base = {} if raw.get("base") is None else raw["base"]
    _check(isinstance(base, dict), "base", "expected a mapping (a full trial config)")
    from_dict(TrialCfg, base, "base")  # unknown keys / bad values in the base config
    search_raw = {} if raw.get("search") is None else raw["search"]
    _check(isinstance(search_raw, dict), "search", "expected a mapping of dotted keys to distributions")
    search: dict[str, Dist] = {}
    for key, d in search_raw.items():
        p = f"search.{key}"
        _check(key in TRIAL_KEYS, p, f"unknown key{suggest(str(key), TRIAL_KEYS)}")
        _check(not key.startswith("data.") or key in SEARCHABLE_DATA_KEYS, p,
               f"the dataset is loaded once per node; only {', '.join(SEARCHABLE_DATA_KEYS)} may vary")
        _check(key != "seed", p, "seeds are set with the top-level `seeds:` key")
        search[key] = _dist(p, d, TRIAL_KEYS)
        if search[key].kind in ("uniform", "loguniform") and INT_KEYS.get(key):
            raise ConfigError(f"{p}.{search[key].kind}: {key} is an integer; use randint or grid")
    seeds_raw = raw.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        _check(seeds_raw >= 1, "seeds", "must be >= 1 (or a list of seeds)")
        seeds = tuple(range(seeds_raw))
    else:
        _check(isinstance(seeds_raw, list) and seeds_raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw),
               "seeds", "expected a positive int or a non-empty list of non-negative ints")
        _check(len(set(seeds_raw)) == len(seeds_raw), "seeds", "seeds must be distinct")
        seeds = tuple(seeds_raw)
    alg = raw.get("search_alg", "grid")
    _check(alg in SEARCH_ALGS, "search_alg", f"unknown value {alg!r} (expected one of {', '.join(SEARCH_ALGS)})")
    num_samples = raw.get("num_samples", 1)
    _check(_is_int(num_samples) and num_samples >= 1, "num_samples", "must be an int >= 1")
    metric, mode = raw.get("metric", "val_acc"), raw.get("mode", "max")
    _check(metric in METRICS, "metric", f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    _check(mode in ("max", "min"), "mode", f"unknown value {mode!r} (expected max or min)")
    mc = raw.get("max_concurrent")
    _check(mc is None or (_is_int(mc) and mc >= 1), "max_concurrent", "must be an int >= 1")
    sched = from_dict(SchedulerCfg, {"kind": raw["scheduler"]} if isinstance(raw.get("scheduler"), str) else raw.get("scheduler"), "scheduler")
    analysis = from_dict(AnalysisCfg, raw.get("analysis"), "analysis")
    fault = raw.get("fault_injection") or {}
    _check(isinstance(fault, dict), "fault_injection", "expected a mapping")
    return SweepSpec(
        name=name, base=base, search=search, seeds=seeds, search_alg=alg, num_samples=num_samples,
        scheduler=sched, metric=metric, mode=mode,
        resources=_resources("resources", raw.get("resources"), TRIAL_KEYS),
        analysis_resources=_resources("analysis_resources", raw.get("analysis_resources"), TRIAL_KEYS),
        max_concurrent=mc, analysis=analysis, fault_injection=fault,
    )


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a space file; errors are prefixed with the file name."""
    raw = load_yaml(path)
    try:
        return parse_spec(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
