"""Loss-surface curves: consistency with the exact Hessian, filter normalisation, exact restoration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moesweep.analysis.landscape import (DEFAULT_ALPHAS, compute_landscape, curvature_at_zero,
                                         filter_normalized_direction, gaussian_direction, loss_curve,
                                         loss_surface_2d)
from moesweep.config import BackboneCfg, HeadCfg, TrialCfg
from moesweep.models import build_model
# The contract-following tiny models and the exact-Hessian reference of the Hessian tests.
from test_hessian import MLPHead, Net, Top1Head, exact_hessian, make_batches


class LinearHead(nn.Module):
    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, x):
        return self.fc(x), {}


class LinearSoftmax(nn.Module):
    """Parameter-free backbone + linear head: CE is smooth and nearly quadratic at small alpha."""

    def __init__(self, d: int = 10, c: int = 4) -> None:
        super().__init__()
        self.backbone, self.head = nn.Identity(), LinearHead(d, c)

    def forward(self, x):
        return self.head(self.backbone(x))


class StackedHead(nn.Module):
    """Stacked expert weights [E, D, H] used as x @ W (summed over experts), then a Linear."""

    def __init__(self, d: int = 4, h: int = 5, c: int = 3, e: int = 2) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(e, d, h))
        self.out = nn.Linear(h, c)

    def forward(self, x):
        return self.out(torch.einsum("bd,edh->bh", x, self.w)), {}  # [B, H], experts summed


class ConvNet(nn.Module):
    """Conv + BatchNorm backbone and the stacked-expert head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = StackedHead()

    def forward(self, x):
        return self.head(self.backbone(x))


def sparse_model() -> nn.Module:
    """A real model: small CNN backbone + sparse top-2 head (4 experts)."""
    torch.manual_seed(0)
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=2),
                   head=HeadCfg(kind="sparse", num_experts=4, top_k=2, expert_hidden=3))
    return build_model(cfg, in_channels=3, image_size=8, num_classes=3)


def linear_case(seed: int = 0):
    torch.manual_seed(seed)
    model = LinearSoftmax().double()
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(200, 10, generator=g, dtype=torch.float64), torch.randint(0, 4, (200,), generator=g)
    return model, [(x[:120], y[:120]), (x[120:], y[120:])]


def test_curvature_fit_ignores_odd_terms_on_a_symmetric_grid():
    a = torch.tensor(DEFAULT_ALPHAS, dtype=torch.float64)
    # L = 1 + 2a + 3a^2 + 5a^3: the cubic is orthogonal to a^2 on a symmetric grid, so L'' = 6 exactly.
    assert curvature_at_zero(a.tolist(), (1 + 2 * a + 3 * a**2 + 5 * a**3).tolist(), 0.1) == pytest.approx(6.0)
    with pytest.raises(ValueError, match=">= 3 points"):
        curvature_at_zero([0.0, 0.5], [1.0, 2.0], 0.1)


def test_consistency_with_hessian_on_linear_softmax():
    model, batches = linear_case()
    lam = torch.linalg.eigvalsh(exact_hessian(model, batches, "all"))
    records, check = compute_landscape(model, batches, n_random=2, n_gaussian=40, sigma=0.03,
                                       trace=float(lam.sum()))
    assert check["lambda_max"] == pytest.approx(float(lam[-1]), rel=1e-6)
    # Fit on |alpha| <= 0.1 of a unit-norm eigenvector: quartic terms leave ~0.1% error here; allow 1%.
    assert check["curvature_rel_err"] <= 1e-2
    # Antithetic Gaussian pairs: mean rise ~ sigma^2/2 tr(H) up to sampling error (40 pairs).
    assert abs(check["gaussian_mean_increase"] - check["gaussian_predicted"]) <= 3 * check["gaussian_stderr"]
    assert check["gaussian_predicted"] == pytest.approx(0.03**2 / 2 * float(lam.sum()))
    kinds = [r["direction_kind"] for r in records]
    assert kinds.count("eigvec") == 21 and kinds.count("random") == 42 and kinds.count("gaussian") == 80
    eig = [r for r in records if r["direction_kind"] == "eigvec"]
    grid = torch.linspace(-0.5, 0.5, 21, dtype=torch.float64).tolist()
    assert [r["alpha"] for r in eig] == pytest.approx(grid, abs=1e-12)
    assert all(r["routing_flip_rate"] is None and 0 <= r["accuracy"] <= 1 for r in records)
    assert eig[10]["alpha"] == 0.0 and eig[10]["loss"] == check["loss0"]


def test_trace_is_estimated_when_not_given():
    model, batches = linear_case()
    lam = torch.linalg.eigvalsh(exact_hessian(model, batches, "all"))
    _, check = compute_landscape(model, batches, n_random=0, n_gaussian=2, n_probes=50)
    assert abs(check["trace"] - float(lam.sum())) <= 3 * check["trace_stderr"]


@pytest.mark.parametrize("param_set", ["all", "head", "backbone"])
def test_parameters_and_modes_restored_bitwise(param_set):
    torch.manual_seed(0)
    model = ConvNet().double()
    batches = [(torch.randn(8, 3, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))]
    model.train()
    model(batches[0][0])  # non-trivial BatchNorm running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records, _ = compute_landscape(model, batches, param_set=param_set, alphas=(-0.5, 0.0, 0.5), n_random=1,
                                   n_gaussian=2, sigma=0.1, fit_radius=0.5, n_probes=3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    # The perturbations did change the loss (the restore is not trivially a no-op).
    assert len({r["loss"] for r in records}) > 3


def test_filter_normalisation_per_filter_row_and_neuron():
    torch.manual_seed(0)
    model = ConvNet()
    d = dict(zip([n for n, _ in model.named_parameters()],
                 filter_normalized_direction(model, "all", torch.Generator().manual_seed(0))))
    p = dict(model.named_parameters())
    conv, bn = "backbone.0.weight", "backbone.1.weight"
    # Conv filter i: ||d_i|| = ||w_i|| (norm over in-channels and kernel).
    assert torch.allclose(d[conv].flatten(1).norm(dim=1), p[conv].detach().flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(d["head.out.weight"].norm(dim=1), p["head.out.weight"].detach().norm(dim=1))
    # Stacked expert weights [E, D, H]: neuron (e, h) is the column over D.
    assert torch.allclose(d["head.w"].norm(dim=1), p["head.w"].detach().norm(dim=1))
    for name in ("backbone.0.bias", bn, "backbone.1.bias", "head.out.bias"):
        assert torch.all(d[name] == 0), name
    assert not torch.allclose(d[conv], p[conv])  # a random direction, not the weights themselves
    # The real MoE heads' stacked experts: w1 [E, D, H] per (e, h) column over D; stacked biases left at 0.
    real = sparse_model()
    d = dict(zip([n for n, _ in real.named_parameters()],
                 filter_normalized_direction(real, "all", torch.Generator().manual_seed(0))))
    w1 = real.head.experts.w1.detach()
    assert torch.allclose(d["head.experts.w1"].norm(dim=1), w1.norm(dim=1))
    assert torch.all(d["head.experts.b1"] == 0) and torch.all(d["head.experts.b2"] == 0)
    g = gaussian_direction(model, "head", torch.Generator().manual_seed(0))
    assert [t.shape for t in g] == [t.shape for t in model.head.parameters()]


def test_routing_flip_rate_for_moe_heads():
    torch.manual_seed(0)
    model = Net(Top1Head(8, 3)).double()
    batches = make_batches()
    router = [torch.randn_like(p) if n.startswith("head.router") else torch.zeros_like(p)
              for n, p in model.named_parameters()]
    recs = loss_curve(model, batches, router, (0.0, 0.5, 5.0), kind="random")
    flips = [r["routing_flip_rate"] for r in recs]
    assert flips[0] == 0.0 and 0.0 < flips[2] <= 1.0 and flips[1] <= flips[2]
    # Moving only the experts cannot change which expert is selected.
    experts = [torch.randn_like(p) if ".experts." in n else torch.zeros_like(p)
               for n, p in model.named_parameters()]
    assert all(r["routing_flip_rate"] == 0.0 for r in loss_curve(model, batches, experts, (0.5, 5.0)))
    dense = Net(MLPHead(8, 12, 3)).double()
    d = gaussian_direction(dense, "all", torch.Generator().manual_seed(0))
    assert loss_curve(dense, batches, d, (0.1,))[0]["routing_flip_rate"] is None


def test_surface_2d_matches_1d_curves():
    model, batches = linear_case()
    gen = torch.Generator().manual_seed(1)
    d1, d2 = (filter_normalized_direction(model, "all", gen) for _ in range(2))
    grid = loss_surface_2d(model, batches, d1, d2, alphas=(-0.2, 0.0, 0.2), betas=(0.0, 0.3))
    assert len(grid) == 6 and {(r["alpha"], r["beta"]) for r in grid} == {(a, b) for a in (-0.2, 0.0, 0.2)
                                                                          for b in (0.0, 0.3)}
    line = loss_curve(model, batches, d1, (-0.2, 0.0, 0.2))
    on_axis = [r for r in grid if r["beta"] == 0.0]
    assert [r["loss"] for r in on_axis] == pytest.approx([r["loss"] for r in line], rel=1e-12)


def test_real_sparse_head_routing_flips_along_router_direction():
    model = sparse_model()
    batches = [(torch.randn(32, 3, 8, 8), torch.randint(0, 3, (32,)))]
    d = [torch.randn_like(p) if "router" in n else torch.zeros_like(p) for n, p in model.head.named_parameters()]
    recs = loss_curve(model, batches, d, (0.0, 1.0, 10.0), param_set="head")
    assert [r["routing_flip_rate"] for r in recs][0] == 0.0 and 0.0 < recs[2]["routing_flip_rate"] <= 1.0
