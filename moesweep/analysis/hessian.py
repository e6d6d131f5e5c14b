"""Hessian sharpness of the cross-entropy loss: top eigenvalues, trace and spectral density.

The loss is the mean cross-entropy over a fixed sample set (no balance loss, no weight decay), with the
model in eval mode (BatchNorm running statistics, dropout and gate noise off), so the Hessian is the
curvature of one deterministic function. Hessian-vector products use double backward over flat
vectors, accumulated batch by batch with each batch weighted by its size. The spectral algorithms live
in ``analysis/lanczos.py``; this module supplies the operator and the records.

Public entry point: ``compute_sharpness(model, batches, ...) -> (record, spectrum)``. The landscape
analysis reuses ``HessianOperator``, ``lanczos_top`` and ``unflatten``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moesweep.analysis import lanczos as lz

PARAM_SETS = ("all", "head", "backbone")
Batches = Sequence[tuple[Tensor, Tensor]]


def select_params(model: nn.Module, param_set: str = "all") -> list[tuple[str, nn.Parameter]]:
    """Named parameters of ``param_set``: ``all``, ``head`` (model.head) or ``backbone`` (model.backbone)."""
    if param_set == "all":
        return list(model.named_parameters())
    if param_set in ("head", "backbone"):
        return list(getattr(model, param_set).named_parameters(prefix=param_set))
    raise ValueError(f"param_set: unknown value {param_set!r} (expected one of {', '.join(PARAM_SETS)})")


@contextlib.contextmanager
def analysis_mode(model: nn.Module, params: Sequence[nn.Parameter] = ()) -> Iterator[None]:
    """Eval mode on every module and ``requires_grad`` on ``params``; both restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req in grads:
            p.requires_grad_(req)


def prepare_inputs(model: nn.Module, batches: Batches,
                   param_set: str) -> tuple[Callable, list[tuple[Tensor, Tensor]]]:
    """(forward, batches) to evaluate the loss of ``param_set``.

    For the head set the backbone is constant, so its features are computed once and the head runs on
    them: every later forward then costs a head forward only. This relies on ``model(x) ==
    model.head(model.backbone(x))``, which is checked on the first batch.
    """
    batches = list(batches)
    if param_set != "head":
        return model, batches
    with analysis_mode(model), torch.no_grad():
        feats = [(model.backbone(x), y) for x, y in batches]
        full, cached = model(batches[0][0])[0], model.head(feats[0][0])[0]
    if not torch.allclose(full, cached, rtol=1e-4, atol=1e-5):
        raise ValueError("param_set='head' needs model(x) == model.head(model.backbone(x))")
    return model.head, feats


def flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector; ``None`` (no gradient) becomes zeros of ``like``'s shape."""
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, like)])


def unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (views of ``vec``)."""
    return [c.view_as(p) for c, p in zip(vec.split([p.numel() for p in like]), like)]


class HessianOperator:
    """The Hessian of the mean cross-entropy w.r.t. one parameter set, as a flat matvec.

    ``hvp(v)`` counts its calls in ``n_hvp``; the parameters are assumed fixed while the operator is
    in use. Parameters that get no gradient (an expert no sample is routed to, gate-noise weights in
    eval) contribute zero rows and columns instead of failing.
    """

    def __init__(self, model: nn.Module, batches: Batches, param_set: str = "all",
                 cache_graph: bool | None = None) -> None:
        self.model, self.param_set = model, param_set
        named = select_params(model, param_set)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.forward, self.batches = prepare_inputs(model, batches, param_set)
        self.n_samples = sum(len(y) for _, y in self.batches)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.n_hvp = 0
        # The gradient's graph depends only on the parameters, so it can be built once and
        # back-propagated through for every HVP (as PyHessian does for one batch): each HVP then costs
        # one second-order backward instead of forward + two backwards. It holds every batch's
        # double-backward graph, hence the default: cache only a single batch.
        self.cache_graph = len(self.batches) == 1 if cache_graph is None else cache_graph
        self._graph: list[list[Tensor]] | None = None

    def _batch_loss(self, x: Tensor, y: Tensor) -> Tensor:
        # Sum over the batch / total samples: the batch terms add up to the mean over all samples.
        return F.cross_entropy(self.forward(x)[0], y, reduction="sum") / self.n_samples

    def loss(self) -> float:
        """Mean cross-entropy over the sample set."""
        with analysis_mode(self.model), torch.no_grad():
            return float(sum(self._batch_loss(x, y) for x, y in self.batches))

    def gradient(self) -> Tensor:
        """Flat gradient of the mean cross-entropy (one forward + backward per batch)."""
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with analysis_mode(self.model, self.params):
            for x, y in self.batches:
                g = torch.autograd.grad(self._batch_loss(x, y), self.params, allow_unused=True)
                out += flatten(g, self.params)
        return out

    def _grads(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """Gradients of one batch's loss term with their graph (create_graph) for the second backward."""
        grads = torch.autograd.grad(self._batch_loss(x, y), self.params, create_graph=True, allow_unused=True)
        # A gradient without grad_fn is constant in the parameters (zero Hessian block): mark it None.
        return [g if g is not None and g.requires_grad else None for g in grads]

    def hvp(self, v: Tensor) -> Tensor:
        """H v by double backward: grad of (grad L . v), summed over batches.

        With ``cache_graph`` the parameters must not change between calls (the graph would be stale).
        """
        vs = unflatten(v.to(self.dtype), self.params)
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with analysis_mode(self.model, self.params):
            if self.cache_graph and self._graph is None:
                self._graph = [self._grads(x, y) for x, y in self.batches]
            for i, (x, y) in enumerate(self.batches):
                grads = self._graph[i] if self.cache_graph else self._grads(x, y)
                terms = [(g * u).sum() for g, u in zip(grads, vs) if g is not None]
                if terms:
                    hv = torch.autograd.grad(torch.stack(terms).sum(), self.params, allow_unused=True,
                                             retain_graph=self.cache_graph)
                    out += flatten(hv, self.params)
        self.n_hvp += 1
        return out

    def random(self, gen: torch.Generator, kind: str = "gaussian") -> Tensor:
        """A random flat vector (``gaussian`` or ``rademacher``), drawn on CPU so seeds match across devices."""
        z = torch.randn(self.dim, generator=gen, dtype=torch.float64)
        if kind == "rademacher":
            z = torch.sign(z)
        return z.to(self.dtype).to(self.device)


@dataclass
class TopEigen:
    eigenvalues: list[float]  # descending
    eigenvectors: Tensor  # [top_n, dim], unit norm
    residuals: list[float]  # ||H v - lambda v||, computed with one extra HVP each
    n_hvp: int


def lanczos_top(op: HessianOperator, top_n: int = 5, max_iters: int = 60, rtol: float = 1e-6,
                seed: int = 0) -> TopEigen:
    """The ``top_n`` largest eigenpairs by Lanczos, with explicit residual norms.

    Keeps the Krylov basis: ``max_iters`` vectors of ``op.dim`` entries (ResNet-18: ~2.7 GB at 60).
    """
    start = op.n_hvp
    gen = torch.Generator().manual_seed(seed)
    res = lz.lanczos(op.hvp, op.random(gen), max_iters, top_n=top_n, rtol=rtol)
    vals, vecs = lz.ritz_vectors(res, top_n)
    residuals = [float((op.hvp(v) - lam * v).norm()) for lam, v in zip(vals.tolist(), vecs)]
    return TopEigen(vals.tolist(), vecs, residuals, op.n_hvp - start)


def power_lambda_max(op: HessianOperator, rtol: float = 1e-4, max_iters: int = 500,
                     seed: int = 0) -> lz.PowerResult:
    """Largest-magnitude eigenvalue by power iteration, for comparison with Lanczos."""
    gen = torch.Generator().manual_seed(seed)
    return lz.power_iteration(op.hvp, op.random(gen), rtol=rtol, max_iters=max_iters)


def hutchinson_trace(op: HessianOperator, n_probes: int = 100, stderr_rtol: float | None = None,
                     seed: int = 0) -> tuple[float, float, int]:
    """Trace by Hutchinson with Rademacher probes: (mean, standard error, probes used)."""
    gen = torch.Generator().manual_seed(seed)
    return lz.hutchinson(op.hvp, lambda: op.random(gen, "rademacher"), n_probes, stderr_rtol)


def spectral_density(op: HessianOperator, n_vectors: int = 3, num_iters: int = 60, n_grid: int = 1000,
                     sigma_rel: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Spectral density by stochastic Lanczos quadrature, Gaussian-broadened onto a grid.

    The Gaussian std is ``sigma_rel`` times the spread of the quadrature nodes; the grid spans the
    nodes plus 5 std on each side, so the density integrates to one on the grid.
    """
    gen = torch.Generator().manual_seed(seed)
    starts = [op.random(gen) for _ in range(n_vectors)]
    nodes, weights = lz.slq_nodes(op.hvp, starts, num_iters)
    lo = min(float(t.min()) for t in nodes)
    hi = max(float(t.max()) for t in nodes)
    sigma = sigma_rel * max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid, dtype=torch.float64)
    density = lz.gaussian_density(nodes, weights, grid, sigma)
    return {"grid": grid.tolist(), "density": density.tolist(), "sigma": sigma, "n_vectors": n_vectors,
            "lanczos_iters": num_iters, "nodes": [t.tolist() for t in nodes],
            "weights": [w.tolist() for w in weights]}


def compute_sharpness(model: nn.Module, batches: Batches, param_set: str = "all", top_n: int = 5,
                      n_probes: int = 100, lanczos_iters: int = 60, slq_vectors: int = 3, seed: int = 0,
                      stderr_rtol: float | None = None, eig_rtol: float = 1e-6,
                      power_rtol: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sharpness record and spectral density of the cross-entropy Hessian over ``batches``.

    Args:
        batches: the fixed sample set, a list of (x, y); the loss is the mean over all samples.
        param_set: ``all``, ``head`` or ``backbone``.
        lanczos_iters: cap for the top-eigenvalue Lanczos (which stops at ``eig_rtol``) and the number
            of steps per SLQ start vector (``slq_vectors`` of them).
        stderr_rtol: stop Hutchinson before ``n_probes`` once its standard error is below this
            fraction of the estimate (None: always ``n_probes`` probes).
        power_rtol: also run power iteration to this tolerance and record it (None: skip).

    Returns:
        (record, spectrum): flat dict of scalars/lists; dict with ``grid``/``density`` lists.
    """
    t0 = time.perf_counter()
    op = HessianOperator(model, batches, param_set)
    top = lanczos_top(op, top_n, lanczos_iters, eig_rtol, seed)
    trace, trace_se, probes = hutchinson_trace(op, n_probes, stderr_rtol, seed + 1)
    power = power_lambda_max(op, power_rtol, seed=seed + 2) if power_rtol is not None else None
    spectrum = spectral_density(op, slq_vectors, lanczos_iters, seed=seed + 3)
    record = {
        "param_set": param_set, "loss": "cross_entropy", "loss_value": op.loss(),
        "n_samples": op.n_samples, "n_params": op.dim,
        "lambda_max": top.eigenvalues[0], "lambda_max_residual": top.residuals[0],
        "top_eigenvalues": top.eigenvalues, "top_residuals": top.residuals,
        "trace": trace, "trace_stderr": trace_se, "n_probes": probes,
        "power_lambda_max": power.eigenvalue if power else math.nan,
        "power_n_hvp": power.n_matvec if power else 0,
        "n_hvp": op.n_hvp, "seconds": time.perf_counter() - t0, "seed": seed,
    }
    spectrum["param_set"] = param_set
    return record, spectrum
