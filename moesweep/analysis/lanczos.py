"""Matrix-free spectral algorithms for a symmetric operator given as ``matvec(v) -> A v``.

Lanczos with full re-orthogonalisation (top eigenpairs), power iteration (kept for comparison),
Hutchinson trace estimation with Rademacher probes, and stochastic Lanczos quadrature (SLQ) for the
spectral density. Nothing here knows about models: ``analysis/hessian.py`` supplies the Hessian-vector
product. Vectors are flat tensors in the operator's dtype/device; the small tridiagonal problems are
solved in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass
class LanczosResult:
    """Tridiagonal T (``alphas`` diagonal, ``betas`` off-diagonal) and the Krylov basis rows."""

    alphas: Tensor  # [m] float64
    betas: Tensor  # [m - 1] float64
    basis: Tensor  # [m, n] orthonormal rows, operator dtype
    n_matvec: int

    def ritz(self, m: int | None = None) -> tuple[Tensor, Tensor]:
        """Ritz values (descending) and T-eigenvectors [m, m] (columns) of the leading m x m block.

        Any prefix is valid: T's leading block is what Lanczos would have produced after m steps,
        which lets a benchmark read the convergence history from one run.
        """
        m = len(self.alphas) if m is None else m
        t = torch.diag(self.alphas[:m]) + torch.diag(self.betas[: m - 1], 1) + torch.diag(self.betas[: m - 1], -1)
        vals, vecs = torch.linalg.eigh(t)
        return vals.flip(0), vecs.flip(1)


def lanczos(matvec: MatVec, v0: Tensor, max_iters: int, top_n: int | None = None,
            rtol: float | None = None) -> LanczosResult:
    """Lanczos with full re-orthogonalisation, started at ``v0``.

    Stops after ``max_iters`` steps, on breakdown (an invariant subspace was found, so T's eigenvalues
    are exact), or, when ``top_n`` and ``rtol`` are given, once the Ritz residual bound
    ``|beta_m s_mi|`` of each of the ``top_n`` largest Ritz values is below ``rtol * max|theta|``.
    """
    n = v0.numel()
    max_iters = min(max_iters, n)
    basis = torch.zeros(max_iters, n, dtype=v0.dtype, device=v0.device)
    basis[0] = v0 / v0.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(max_iters):
        w = matvec(basis[j])
        alphas.append(float(w @ basis[j]))
        # Classical Gram-Schmidt against the whole basis, twice ("twice is enough"): without it the
        # basis loses orthogonality as Ritz values converge and ghost copies of them appear.
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.norm())
        scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
        if j + 1 == max_iters or beta <= 1e-10 * max(scale, 1e-30):
            break
        if top_n is not None and rtol is not None and j + 1 >= top_n:
            res = LanczosResult(torch.tensor(alphas, dtype=torch.float64),
                                torch.tensor(betas, dtype=torch.float64), basis[: j + 1], j + 1)
            vals, vecs = res.ritz()
            bound = (beta * vecs[-1, :top_n]).abs()
            if bool((bound <= rtol * vals.abs().max()).all()):
                break
        betas.append(beta)
        basis[j + 1] = w / beta
    m = len(alphas)
    return LanczosResult(torch.tensor(alphas, dtype=torch.float64),
                         torch.tensor(betas[: m - 1], dtype=torch.float64), basis[:m], m)


def ritz_vectors(res: LanczosResult, top_n: int) -> tuple[Tensor, Tensor]:
    """The ``top_n`` largest Ritz values [top_n] (float64) and unit Ritz vectors [top_n, n]."""
    vals, vecs = res.ritz()
    top_n = min(top_n, len(vals))
    s = vecs[:, :top_n].to(res.basis.dtype)  # [m, top_n]
    v = (res.basis.T @ s).T  # [top_n, n]
    return vals[:top_n], v / v.norm(dim=1, keepdim=True)


@dataclass
class PowerResult:
    eigenvalue: float  # largest-magnitude eigenvalue estimate (Rayleigh quotient)
    eigenvector: Tensor
    n_matvec: int
    history: list[float]  # Rayleigh quotient after each matvec


def power_iteration(matvec: MatVec, v0: Tensor, rtol: float = 1e-4, max_iters: int = 500) -> PowerResult:
    """Power iteration until the Rayleigh quotient changes by less than ``rtol`` (relative)."""
    v = v0 / v0.norm()
    history: list[float] = []
    for _ in range(max_iters):
        w = matvec(v)
        history.append(float(v @ w))
        wn = w.norm()
        if float(wn) == 0.0:
            break
        v = w / wn
        if len(history) > 1 and abs(history[-1] - history[-2]) <= rtol * abs(history[-1]):
            break
    return PowerResult(history[-1], v, len(history), history)


def hutchinson(matvec: MatVec, probe: Callable[[], Tensor], n_probes: int = 100,
               stderr_rtol: float | None = None, min_probes: int = 10) -> tuple[float, float, int]:
    """Hutchinson trace estimate ``mean(z^T A z)`` over probes; returns (mean, standard error, probes).

    Runs ``n_probes`` probes unless ``stderr_rtol`` is given, in which case it stops as soon as at least
    ``min_probes`` were drawn and the standard error is below ``stderr_rtol * |mean|``.
    """
    vals: list[float] = []
    for _ in range(n_probes):
        z = probe()
        vals.append(float(z @ matvec(z)))
        if stderr_rtol is not None and len(vals) >= min_probes:
            mean, se = _mean_stderr(vals)
            if se <= stderr_rtol * abs(mean):
                break
    mean, se = _mean_stderr(vals)
    return mean, se, len(vals)


def _mean_stderr(vals: list[float]) -> tuple[float, float]:
    t = torch.tensor(vals, dtype=torch.float64)
    se = float(t.std() / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
    return float(t.mean()), se


def slq_nodes(matvec: MatVec, starts: list[Tensor], num_iters: int) -> tuple[list[Tensor], list[Tensor]]:
    """Gauss quadrature nodes (Ritz values) and weights (squared first components) per start vector.

    For a unit start vector v, ``v^T f(A) v ~= sum_j w_j f(theta_j)``; averaged over random v this
    estimates ``tr f(A) / n``, so the weights of each start vector sum to one.
    """
    nodes, weights = [], []
    for v0 in starts:
        vals, vecs = lanczos(matvec, v0, num_iters).ritz()
        nodes.append(vals)
        weights.append(vecs[0] ** 2)
    return nodes, weights


def gaussian_density(nodes: list[Tensor], weights: list[Tensor], grid: Tensor, sigma: float) -> Tensor:
    """Spectral density on ``grid``: quadrature nodes broadened by Gaussians of std ``sigma``, averaged."""
    density = torch.zeros_like(grid)
    for th, w in zip(nodes, weights):
        z = (grid[:, None] - th[None, :]) / sigma  # [G, m]
        density += (w[None, :] * torch.exp(-0.5 * z**2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return density / len(nodes)
