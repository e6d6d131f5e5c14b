"""Loss-surface perturbations: loss and accuracy along directions in parameter space.

Curves ``L(theta + alpha d)`` on the caller's batches (cross-entropy, eval mode) along
(a) the top Hessian eigenvector (unit global norm; the study's protocol is 21 points in [-0.5, 0.5]),
(b) filter-normalised random directions (Li et al. 2018: each conv filter / linear row rescaled to the
norm of the matching weights; biases and BatchNorm parameters unperturbed), and (c) Gaussian
perturbations of std sigma (antithetic pairs +-sigma d, d ~ N(0, I)), which check the trace:
``E[L(theta + eps)] - L(theta) ~= sigma^2 / 2 tr(H)``. MoE heads also get the fraction of samples
whose selected expert set differs from the unperturbed one (``routing_flip_rate``).

Parameters are written from a saved copy for every point and copied back afterwards, so they are
restored bit for bit.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moesweep.analysis.hessian import (Batches, HessianOperator, analysis_mode, hutchinson_trace,
                                       lanczos_top, prepare_inputs, select_params, unflatten)
from moesweep.models.heads.experts import ExpertMLPs

DEFAULT_ALPHAS = tuple(round(-0.5 + 0.05 * i, 10) for i in range(21))  # exact 0.0 at the centre
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def evaluate(forward: nn.Module, batches: Batches) -> tuple[float, float, Tensor | None]:
    """Mean cross-entropy, accuracy and the sorted selected-expert sets [N, K] (None without routing),
    in eval mode. ``forward`` is the model, or its head when ``batches`` hold features."""
    loss, correct, n, sets = 0.0, 0, 0, []
    with analysis_mode(forward), torch.no_grad():
        for x, y in batches:
            logits, aux = forward(x)
            loss += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
            if "expert_index" in aux:
                sets.append(aux["expert_index"].sort(dim=1).values)
    return loss / n, correct / n, torch.cat(sets) if sets else None


@contextlib.contextmanager
def perturbation(params: Sequence[nn.Parameter]) -> Iterator[Callable[[Sequence[Tensor], float], None]]:
    """Yields ``apply(direction, alpha)`` that sets each p to p0 + alpha d; p0 is copied back on exit."""
    saved = [p.detach().clone() for p in params]

    def apply(direction: Sequence[Tensor], alpha: float) -> None:
        with torch.no_grad():
            for p, p0, d in zip(params, saved, direction):
                p.copy_(p0 + alpha * d)

    try:
        yield apply
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)


def filter_normalized_direction(model: nn.Module, param_set: str, gen: torch.Generator) -> list[Tensor]:
    """A Gaussian direction with each filter/neuron rescaled to the norm of its weights (Li et al. 2018).

    nn.Linear / nn.Conv weights are [out, in, ...]: one filter per row. The stacked expert weights of
    ``ExpertMLPs`` (w1 [E, D, H], w2 [E, H, C]) and any other parameter of >= 2 dims are used as
    ``x @ W`` with W [..., in, out]: one neuron per (leading..., out) index, normalised over the ``in``
    axis. Biases (1-D, and the experts' stacked b1 [E, H], b2 [E, C]) and BatchNorm parameters get 0.
    """
    dims = _filter_dims(model)
    out = []
    for _, p in select_params(model, param_set):
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        axes = dims.get(id(p), (p.dim() - 2,) if p.dim() >= 2 else None)
        if axes is None:
            d.zero_()
        else:
            norm = torch.linalg.vector_norm
            d *= norm(p.detach().double().cpu(), dim=axes, keepdim=True) / norm(d, dim=axes, keepdim=True)
        out.append(d.to(dtype=p.dtype, device=p.device))
    return out


def _filter_dims(model: nn.Module) -> dict[int, tuple[int, ...] | None]:
    """Axes to normalise over for parameters whose layout is known (by id); None: a bias, left at 0."""
    dims: dict[int, tuple[int, ...] | None] = {}
    for m in model.modules():
        if isinstance(m, _LAYERS):
            dims[id(m.weight)] = tuple(range(1, m.weight.dim()))
        elif isinstance(m, ExpertMLPs):
            dims.update({id(m.w1): (1,), id(m.w2): (1,), id(m.b1): None, id(m.b2): None})
    return dims


def gaussian_direction(model: nn.Module, param_set: str, gen: torch.Generator) -> list[Tensor]:
    """d ~ N(0, I) over every parameter of the set (biases included, as in the trace it checks)."""
    return [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype=p.dtype, device=p.device)
            for _, p in select_params(model, param_set)]


def loss_curve(model: nn.Module, batches: Batches, direction: Sequence[Tensor], alphas: Sequence[float],
               param_set: str = "all", kind: str = "random", direction_id: int = 0) -> list[dict[str, Any]]:
    """Records of loss, accuracy and routing flip rate at ``theta + alpha d`` for each alpha."""
    return _curves(model, batches, param_set, [(kind, direction_id, direction, alphas)])[0]


def _curves(model: nn.Module, batches: Batches, param_set: str,
            items: Iterable[tuple]) -> tuple[list[dict[str, Any]], float]:
    """Evaluate (kind, id, direction, alphas[, record overrides]) items with one feature cache and one
    parameter copy; ``items`` may be a generator, so directions need not all be in memory at once.
    Returns the records and the unperturbed loss."""
    params = [p for _, p in select_params(model, param_set)]
    forward, batches = prepare_inputs(model, batches, param_set)
    records = []
    with analysis_mode(model), perturbation(params) as apply:
        loss0, _, sets0 = evaluate(forward, batches)
        for kind, did, direction, alphas, *extra in items:
            for a in alphas:
                apply(direction, float(a))
                loss, acc, sets = evaluate(forward, batches)
                flip = None if sets is None else float((sets != sets0).any(1).double().mean())
                records.append({"param_set": param_set, "direction_kind": kind, "direction_id": did,
                                "alpha": float(a), "loss": loss, "accuracy": acc, "routing_flip_rate": flip,
                                **(extra[0] if extra else {})})
    return records, loss0


def curvature_at_zero(alphas: Sequence[float], losses: Sequence[float], radius: float) -> float:
    """Second derivative at 0 from a least-squares quadratic through the points with |alpha| <= radius.

    On a grid symmetric about 0 the cubic term is orthogonal to the fitted quadratic term, so the
    estimate is off by O(alpha^2) (quartic terms), not O(alpha).
    """
    pts = [(a, l) for a, l in zip(alphas, losses) if abs(a) <= radius + 1e-12]
    if len(pts) < 3:
        raise ValueError(f"curvature fit needs >= 3 points with |alpha| <= {radius}, got {len(pts)}")
    a = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    design = torch.stack([torch.ones_like(a), a, a**2], 1)  # [P, 3]
    coef = torch.linalg.lstsq(design, torch.tensor([p[1] for p in pts], dtype=torch.float64)[:, None]).solution
    return 2.0 * float(coef[2, 0])


def compute_landscape(model: nn.Module, batches: Batches, param_set: str = "all",
                      alphas: Sequence[float] = DEFAULT_ALPHAS, n_random: int = 3, sigma: float = 1e-3,
                      n_gaussian: int = 10, fit_radius: float = 0.1, eigvec: Sequence[Tensor] | None = None,
                      lambda_max: float | None = None, trace: float | None = None, n_probes: int = 100,
                      seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """1-D loss/accuracy curves and the consistency check against the Hessian, on ``batches``.

    Args:
        alphas: grid for the eigenvector and the random directions.
        sigma, n_gaussian: Gaussian perturbation std and number of antithetic pairs (records at +-sigma).
        fit_radius: |alpha| range of the quadratic fit whose curvature is compared with lambda_max.
        eigvec, lambda_max, trace: reuse results for the SAME batches and param_set (per-parameter
            tensors for eigvec); when None they are computed here (Lanczos top-1, Hutchinson).

    Returns:
        (records, check): records with direction_kind in {eigvec, random, gaussian}, direction_id,
        alpha, loss, accuracy, routing_flip_rate (None for heads without expert_index); check holds
        the curvature and trace comparisons.
    """
    trace_se = math.nan  # only known when the trace is estimated here
    if eigvec is None or lambda_max is None or trace is None:
        op = HessianOperator(model, batches, param_set)
        if eigvec is None or lambda_max is None:
            top = lanczos_top(op, top_n=1, seed=seed)
            lambda_max, eigvec = top.eigenvalues[0], unflatten(top.eigenvectors[0], op.params)
        if trace is None:
            trace, trace_se, _ = hutchinson_trace(op, n_probes=n_probes, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    # Generators: each random direction is drawn (in a fixed order) only when it is evaluated.
    items = itertools.chain(
        [("eigvec", 0, eigvec, alphas)],
        (("random", i, filter_normalized_direction(model, param_set, gen), alphas) for i in range(n_random)),
        (("gaussian", i, gaussian_direction(model, param_set, gen), (sigma, -sigma)) for i in range(n_gaussian)))
    records, loss0 = _curves(model, batches, param_set, items)

    eig = [r for r in records if r["direction_kind"] == "eigvec"]
    curvature = curvature_at_zero([r["alpha"] for r in eig], [r["loss"] for r in eig], fit_radius)
    gauss = [r["loss"] for r in records if r["direction_kind"] == "gaussian"]
    # Antithetic pairs: (L(+eps) + L(-eps)) / 2 - L0 cancels the gradient and all odd-order terms.
    rises = torch.tensor([(gauss[2 * i] + gauss[2 * i + 1]) / 2 - loss0 for i in range(n_gaussian)],
                         dtype=torch.float64)
    predicted = sigma**2 / 2 * trace
    check = {"param_set": param_set, "loss0": loss0, "lambda_max": lambda_max, "eigvec_curvature": curvature,
             "curvature_rel_err": abs(curvature - lambda_max) / abs(lambda_max), "fit_radius": fit_radius,
             "trace": trace, "trace_stderr": trace_se, "sigma": sigma, "n_gaussian": n_gaussian,
             "gaussian_mean_increase": float(rises.mean()),
             "gaussian_stderr": float(rises.std() / math.sqrt(n_gaussian)) if n_gaussian > 1 else math.nan,
             "gaussian_predicted": predicted,
             "gaussian_rel_err": abs(float(rises.mean()) - predicted) / abs(predicted)}
    return records, check


def loss_surface_2d(model: nn.Module, batches: Batches, d1: Sequence[Tensor], d2: Sequence[Tensor],
                    alphas: Sequence[float], betas: Sequence[float],
                    param_set: str = "all") -> list[dict[str, Any]]:
    """Loss/accuracy on the plane ``theta + alpha d1 + beta d2`` (records carry alpha and beta)."""
    # One direction per grid point, applied at step 1; built lazily so only one lives at a time.
    points = ((a, b) for b in betas for a in alphas)
    items = (("plane", i, [a * x + b * y for x, y in zip(d1, d2)], (1.0,), {"alpha": a, "beta": b})
             for i, (a, b) in enumerate(points))
    return _curves(model, batches, param_set, items)[0]
