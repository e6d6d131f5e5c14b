"""Expand a ``SweepSpec`` into concrete configurations, ids and trial configs; validate before Ray.

Grid and random spaces are expanded here, deterministically, into a list of *points* (dotted key ->
value); Ray Tune then runs ``grid_search`` over that list. Doing the expansion ourselves makes
conditional keys exact (a ``when``-guarded key never multiplies configurations it does not apply to),
makes ``--dry-run`` print the real plan, and gives every configuration a stable ``config_id``. Optuna
spaces are sampled define-by-run (see ``optuna_space``) so conditions work there too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from typing import Any

from moesweep.config import ConfigError, TrialCfg, from_dict, set_path, to_dict
from moesweep.sweep.spec import Dist, SweepSpec

MAX_CORNERS = 20000


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def view(spec: SweepSpec, point: dict[str, Any]) -> dict[str, Any]:
    """Values visible to ``when`` conditions: the base config's (with defaults) overlaid by the point."""
    return {**flatten(to_dict(spec.base_cfg)), **point}


def trial_dict(spec: SweepSpec, point: dict[str, Any], seed: int) -> dict[str, Any]:
    d = copy.deepcopy(spec.base)
    for k, v in point.items():
        set_path(d, k, v)
    d["seed"] = seed
    return d


def trial_cfg(spec: SweepSpec, point: dict[str, Any], seed: int) -> TrialCfg:
    return from_dict(TrialCfg, trial_dict(spec, point, seed))


def config_id(spec: SweepSpec, point: dict[str, Any]) -> str:
    """Hash of the resolved trial config without its seed: the same for all seeds of a configuration."""
    d = to_dict(trial_cfg(spec, point, 0))
    d.pop("seed")
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def trial_id(cid: str, seed: int) -> str:
    return f"{cid}-s{seed}"


def sample(dist: Dist, rng: random.Random) -> Any:
    if dist.kind in ("grid", "choice"):
        return rng.choice(dist.values)
    if dist.kind == "uniform":
        return rng.uniform(dist.low, dist.high)
    if dist.kind == "loguniform":
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.randrange(int(dist.low), int(dist.high))  # randint: high exclusive, like Tune


def _check_condition_order(spec: SweepSpec) -> None:
    seen: list[str] = []
    for key, dist in spec.search.items():
        for ck, _ in dist.when:
            if ck in spec.search and ck not in seen:
                raise ConfigError(f"search.{key}.when.{ck}: condition on a key searched later or on itself; "
                                  f"list {ck} before {key}")
        seen.append(key)


def expand_points(spec: SweepSpec, seed: int = 0) -> list[dict[str, Any]]:
    """Grid keys enumerated, other keys sampled ``num_samples`` times (seeded), conditions applied,
    duplicates (same config_id) dropped. Order is deterministic."""
    _check_condition_order(spec)
    rng = random.Random(seed)
    points: list[dict[str, Any]] = []
    for _ in range(spec.num_samples):
        partial: list[dict[str, Any]] = [{}]
        for key, dist in spec.search.items():
            nxt = []
            for p in partial:
                if not dist.applies(view(spec, p)):
                    nxt.append(p)
                elif dist.kind == "grid":
                    nxt.extend({**p, key: v} for v in dist.values)
                else:
                    nxt.append({**p, key: sample(dist, rng)})
            partial = nxt
        points.extend(partial)
        if all(d.kind == "grid" for d in spec.search.values()):
            break  # a pure grid is the same every repeat
    seen, out = set(), []
    for p in points:
        cid = config_id(spec, p)
        if cid not in seen:
            seen.add(cid)
            out.append(p)
    return out


class OptunaSpace:
    """Define-by-run space for OptunaSearch: conditional keys are only suggested where they apply.
    (A class, not a closure: Tune pickles the searcher with the experiment state.)"""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, trial) -> None:
        point: dict[str, Any] = {}
        for key, dist in self.spec.search.items():
            if not dist.applies(view(self.spec, point)):
                continue
            if dist.kind in ("grid", "choice"):
                point[key] = trial.suggest_categorical(key, list(dist.values))
            elif dist.kind == "uniform":
                point[key] = trial.suggest_float(key, dist.low, dist.high)
            elif dist.kind == "loguniform":
                point[key] = trial.suggest_float(key, dist.low, dist.high, log=True)
            else:
                point[key] = trial.suggest_int(key, int(dist.low), int(dist.high) - 1)
        return None


def optuna_space(spec: SweepSpec) -> OptunaSpace:
    return OptunaSpace(spec)


def corner_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of finite values and range end-points, conditions applied: if a bad value
    (e.g. top_k > num_experts) is reachable anywhere in the space, it is reachable at a corner."""
    _check_condition_order(spec)
    partial: list[dict[str, Any]] = [{}]
    for key, dist in spec.search.items():
        if dist.is_finite:
            opts = list(dist.values)
        elif dist.kind == "randint":
            opts = sorted({int(dist.low), int(dist.high) - 1})
        else:
            opts = [dist.low, dist.high]
        nxt = []
        for p in partial:
            nxt.extend([{**p, key: v} for v in opts] if dist.applies(view(spec, p)) else [p])
        partial = nxt
        if len(partial) > MAX_CORNERS:
            raise ConfigError(f"search: more than {MAX_CORNERS} corner combinations; split the space")
    return partial


def data_shape(cfg: TrialCfg) -> tuple[int, int, int]:
    """(in_channels, image_size, num_classes) known from the config alone, without loading data."""
    d = cfg.data
    if d.name == "cifar10":
        return 3, 32, 10
    if d.name == "digits":
        return 1, 8, 10
    return 3, d.synthetic_image_size, d.synthetic_classes


def validate(spec: SweepSpec) -> list[dict[str, Any]]:
    """Check every reachable configuration and build one model per head kind with a dummy batch.

    Returns the expanded points (grid/random) or the corner points (optuna). Raises ConfigError."""
    if not spec.search:
        raise ConfigError("search: empty; a sweep needs at least one searched key "
                          "(use `moesweep train` for a single configuration)")
    for point in corner_points(spec):
        for seed in spec.seeds[:1]:
            try:
                trial_cfg(spec, point, seed)
            except ConfigError as e:
                shown = ", ".join(f"{k}={v}" for k, v in point.items())
                raise ConfigError(f"{e} (reachable at {shown})") from None
    points = expand_points(spec) if spec.search_alg != "optuna" else corner_points(spec)
    if not points:
        raise ConfigError("search: the space expands to no configuration")
    _dummy_models(spec, points)
    return points


def _dummy_models(spec: SweepSpec, points: list[dict[str, Any]]) -> None:
    import torch

    from moesweep.models import build_model

    by_kind: dict[str, TrialCfg] = {}
    for p in points:
        cfg = trial_cfg(spec, p, spec.seeds[0])
        by_kind.setdefault(cfg.head.kind, cfg)
    for kind, cfg in by_kind.items():
        c, s, n = data_shape(cfg)
        try:
            with torch.random.fork_rng():
                model = build_model(cfg, c, s, n)
                x = torch.randn(2, c, s, s)
                for train in (True, False):
                    model.train(train)
                    logits, aux = model(x)
                    assert logits.shape == (2, n), f"logits shape {tuple(logits.shape)} != (2, {n})"
                    assert "balance_loss" in aux, "aux lacks balance_loss"
        except Exception as e:  # a model that cannot run a dummy batch must fail here, not on a cluster
            raise ConfigError(f"head.kind={kind}: model fails on a dummy batch ({type(e).__name__}: {e})") from None


def plan(spec: SweepSpec, points: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial plan for --dry-run and the manifest: configurations per head, seeds, resources."""
    per_head: dict[str, int] = {}
    res: dict[str, int] = {}
    for p in points if spec.search_alg != "optuna" else []:
        kind = trial_cfg(spec, p, spec.seeds[0]).head.kind
        per_head[kind] = per_head.get(kind, 0) + 1
        r = spec.resources.for_point(view(spec, p))
        tag = f"cpu={r['cpu']:g} gpu={r['gpu']:g}"
        res[tag] = res.get(tag, 0) + 1
    n_cfg = len(points) if spec.search_alg != "optuna" else spec.num_samples
    return {"configurations": n_cfg, "seeds": list(spec.seeds), "trials": n_cfg * len(spec.seeds),
            "per_head": per_head, "resources": res, "search_alg": spec.search_alg,
            "scheduler": spec.scheduler.kind, "max_concurrent": spec.max_concurrent}

