"""Hessian sharpness vs the exact Hessian of tiny float64 models (torch.autograd.functional.hessian)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from moesweep.analysis.hessian import (HessianOperator, compute_sharpness, flatten, hutchinson_trace,
                                       lanczos_top, power_lambda_max, select_params, spectral_density,
                                       unflatten)
from moesweep.config import BackboneCfg, HeadCfg, TrialCfg
from moesweep.models import build_model


class MLPHead(nn.Module):
    """D -> H -> C with dropout: the dropout must be off while the Hessian is measured."""

    def __init__(self, d: int, h: int, c: int, p: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Dropout(p), nn.Linear(h, c))

    def forward(self, x):
        return self.net(x), {}


class Top1Head(nn.Module):
    """Top-1 routed head following the MoE contract, with parameters that get no gradient in eval.

    ``w_noise`` only acts in training mode (like Shazeer gate noise) and expert 2 is never chosen (its
    router bias is -100), so both receive no gradient: the Hessian must still be computed.
    """

    def __init__(self, d: int, c: int, e: int = 3) -> None:
        super().__init__()
        self.router = nn.Linear(d, e)
        self.w_noise = nn.Parameter(torch.zeros(d, e))
        self.experts = nn.ModuleList(nn.Linear(d, c) for _ in range(e))
        self.dispatch = "naive"
        with torch.no_grad():
            self.router.bias[-1] = -100.0

    def forward(self, x):
        logits = self.router(x)
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.w_noise)
        probs = logits.softmax(-1)
        idx = probs.argmax(-1, keepdim=True)  # [B, 1]
        gate = probs.gather(1, idx)  # [B, 1]
        out = torch.zeros(len(x), self.experts[0].out_features, dtype=x.dtype)
        for e in idx.unique().tolist():  # naive dispatch: only the experts that were picked run
            rows = (idx[:, 0] == e).nonzero()[:, 0]
            out = out.index_add(0, rows, self.experts[e](x[rows]))
        return gate * out, {"expert_index": idx}


class Net(nn.Module):
    """Linear+tanh backbone and a given head: model(x) -> (logits, aux)."""

    def __init__(self, head: nn.Module, d_in: int = 6, d: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d_in, d), nn.Tanh())
        self.head = head

    def forward(self, x):
        return self.head(self.backbone(x))


def make_batches(sizes=(24, 16), d_in: int = 6, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g))
            for n in sizes]


def mlp_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net(MLPHead(8, 12, 3)).double()  # 56 backbone + 147 head parameters


def exact_hessian(model: nn.Module, batches, param_set: str) -> torch.Tensor:
    """Dense Hessian of the mean cross-entropy over a flat parameter vector (the reference)."""
    named = select_params(model, param_set)
    names, params = [n for n, _ in named], [p.detach() for _, p in named]
    n = sum(len(y) for _, y in batches)

    def loss(flat):
        d = dict(zip(names, unflatten(flat, params)))
        return sum(F.cross_entropy(functional_call(model, d, (x,))[0], y, reduction="sum")
                   for x, y in batches) / n

    model.eval()
    h = torch.autograd.functional.hessian(loss, flatten(params, params))
    model.train()
    return h


@pytest.fixture(scope="module")
def mlp_case():
    model, batches = mlp_net(), make_batches()
    return model, batches, {s: torch.linalg.eigvalsh(exact_hessian(model, batches, s)).flip(0)
                            for s in ("all", "head", "backbone")}


@pytest.mark.parametrize("param_set", ["all", "head", "backbone"])
def test_lanczos_top_matches_exact_eigenvalues(mlp_case, param_set):
    model, batches, eig = mlp_case
    op = HessianOperator(model, batches, param_set)
    top = lanczos_top(op, top_n=5, max_iters=80, seed=1)
    ref = eig[param_set]
    assert op.dim == len(ref)
    assert abs(top.eigenvalues[0] - ref[0]) / abs(ref[0]) <= 1e-4
    assert torch.allclose(torch.tensor(top.eigenvalues, dtype=torch.float64), ref[:5],
                               rtol=1e-6, atol=1e-8 * float(ref[0]))
    assert max(top.residuals) <= 1e-5 * float(ref[0])
    # Eigenvectors are unit and mutually orthogonal.
    gram = top.eigenvectors @ top.eigenvectors.T
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    assert top.n_hvp == op.n_hvp


def test_hvp_matches_exact_hessian_and_weights_batches_by_size(mlp_case):
    model, batches, _ = mlp_case
    h = exact_hessian(model, batches, "all")
    v = torch.randn(h.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    split = HessianOperator(model, batches, "all").hvp(v)  # batches of 24 and 16
    joined = HessianOperator(model, [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))])
    assert joined.cache_graph  # one batch: the gradient graph is built once and reused
    assert torch.equal(joined.hvp(v), joined.hvp(v)) and joined.n_hvp == 2
    assert torch.allclose(split, h @ v, rtol=1e-10, atol=1e-12)
    assert torch.allclose(joined.hvp(v), split, rtol=1e-10, atol=1e-12)


def test_hutchinson_trace_within_three_stderr(mlp_case):
    model, batches, eig = mlp_case
    op = HessianOperator(model, batches, "all")
    trace, se, n = hutchinson_trace(op, n_probes=100, seed=0)
    assert n == 100 and op.n_hvp == 100
    assert abs(trace - float(eig["all"].sum())) <= 3 * se
    # With a standard-error target it stops early, but only once the target is met.
    early, early_se, n_early = hutchinson_trace(op, n_probes=100, stderr_rtol=0.2, seed=0)
    assert 10 <= n_early < 100 and early_se <= 0.2 * abs(early)


def test_power_iteration_agrees_with_exact(mlp_case):
    model, batches, eig = mlp_case
    ref = eig["all"][eig["all"].abs().argmax()]
    power = power_lambda_max(HessianOperator(model, batches, "all"), rtol=1e-9, max_iters=3000)
    assert abs(power.eigenvalue - float(ref)) / abs(float(ref)) <= 1e-4
    assert power.n_matvec == len(power.history) > 1


def test_slq_density_integrates_to_one_and_mean_matches_trace(mlp_case):
    model, batches, eig = mlp_case
    op = HessianOperator(model, batches, "all")
    n_vec = 4
    spec = spectral_density(op, n_vectors=n_vec, num_iters=40, seed=0)
    grid, dens = torch.tensor(spec["grid"]), torch.tensor(spec["density"])
    assert torch.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    mean = float(torch.trapezoid(grid * dens, grid))
    # Each start vector's quadrature mean is v^T H v / |v|^2, an unbiased estimate of tr(H)/n whose
    # variance is ~ 2 sum(lambda^2) / n^2 for Gaussian v; allow 4 std of the n_vec-average.
    lam, n = eig["all"], len(eig["all"])
    std = math.sqrt(2 * float((lam**2).sum())) / n / math.sqrt(n_vec)
    assert abs(mean - float(lam.sum()) / n) <= 4 * std
    # The quadrature nodes span the spectrum's extremes (Lanczos finds them first).
    assert max(max(t) for t in spec["nodes"]) == pytest.approx(float(lam[0]), rel=1e-6)


def test_unused_parameters_do_not_break_the_hessian():
    torch.manual_seed(0)
    model = Net(Top1Head(8, 3)).double()
    batches = make_batches()
    op = HessianOperator(model, batches, "head")
    grad = unflatten(op.gradient(), op.params)
    named = dict(zip(op.names, grad))
    assert torch.all(named["head.w_noise"] == 0) and torch.all(named["head.experts.2.weight"] == 0)
    h = exact_hessian(model, batches, "head")
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op.hvp(v), h @ v, rtol=1e-9, atol=1e-12)
    top = lanczos_top(op, top_n=3, max_iters=60)
    ref = torch.linalg.eigvalsh(h).flip(0)
    assert abs(top.eigenvalues[0] - float(ref[0])) / float(ref[0]) <= 1e-4


def test_eval_mode_enforced_and_restored():
    model, batches = mlp_net(), make_batches()
    model.train()
    op = HessianOperator(model, batches, "all")
    v = torch.ones(op.dim, dtype=torch.float64)
    # Dropout p=0.5 in training mode would make two HVPs differ; eval mode makes them identical.
    assert torch.equal(op.hvp(v), op.hvp(v))
    assert all(m.training for m in model.modules())


def test_compute_sharpness_record(mlp_case):
    model, batches, eig = mlp_case
    rec, spec = compute_sharpness(model, batches, param_set="head", top_n=5, n_probes=20,
                                  lanczos_iters=40, slq_vectors=2, seed=0, power_rtol=1e-6)
    ref = eig["head"]
    assert rec["loss"] == "cross_entropy" and rec["param_set"] == "head" == spec["param_set"]
    assert rec["n_samples"] == 40 and rec["n_params"] == len(ref) and rec["n_probes"] == 20
    assert rec["lambda_max"] == rec["top_eigenvalues"][0] == pytest.approx(float(ref[0]), rel=1e-4)
    assert rec["lambda_max_residual"] == rec["top_residuals"][0] <= 1e-5 * float(ref[0])
    assert abs(rec["trace"] - float(ref.sum())) <= 3 * rec["trace_stderr"]
    assert rec["power_lambda_max"] == pytest.approx(float(ref[ref.abs().argmax()]), rel=1e-3)
    # Lanczos + 5 residuals + 20 probes + power + 2 SLQ runs of at most 40 steps.
    assert 25 + rec["power_n_hvp"] < rec["n_hvp"] <= 40 + 5 + 20 + rec["power_n_hvp"] + 80
    assert rec["seconds"] > 0
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    model.eval()
    with torch.no_grad():
        assert rec["loss_value"] == pytest.approx(float(F.cross_entropy(model(x)[0], y)), rel=1e-12)
    assert len(spec["grid"]) == len(spec["density"])


def test_unknown_param_set_is_rejected():
    with pytest.raises(ValueError, match="param_set"):
        select_params(mlp_net(), "router")


def test_real_sparse_head_with_noise_weights():
    torch.manual_seed(0)
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=2),
                   head=HeadCfg(kind="sparse", num_experts=3, top_k=2, expert_hidden=3, noisy=True))
    model = build_model(cfg, in_channels=3, image_size=8, num_classes=3).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=g, dtype=torch.float64)
    batches = [(x, torch.randint(0, 3, (16,), generator=g))]
    op = HessianOperator(model, batches, "head")
    grads = dict(zip(op.names, unflatten(op.gradient(), op.params)))
    noise = [n for n in op.names if "noise" in n]
    assert noise and all(torch.all(grads[n] == 0) for n in noise)  # gate noise is off in eval
    h = exact_hessian(model, batches, "head")
    top = lanczos_top(op, top_n=3, max_iters=60)
    ref = torch.linalg.eigvalsh(h).flip(0)
    assert abs(top.eigenvalues[0] - float(ref[0])) / float(ref[0]) <= 1e-4
    # All parameters (conv + BatchNorm in eval + head): H is symmetric, u^T (H v) = v^T (H u).
    full = HessianOperator(model, batches, "all")
    u, v = (full.random(g) for _ in range(2))
    assert float(u @ full.hvp(v)) == pytest.approx(float(v @ full.hvp(u)), rel=1e-9)
