"""Every registered head against the head contract, plus the sparse head's dispatch equivalence,
parameter matching, MAC accounting and training-only noise."""

import dataclasses
import warnings

import pytest
import torch

from moesweep.config import HeadCfg
from moesweep.models.heads import HEADS, create_head, sparse_moe
from moesweep.models.heads.experts import mlp_num_params
from moesweep.models.heads.losses import kl_uniform, z_loss

D, C, B = 24, 5, 16
VARIANTS = {  # a few configs per head; every registered kind runs them all
    "k1_auto": dict(top_k=1, num_experts=4, hidden=64),  # expert_hidden auto: 14 (sparse), 15 (soft)
    "k2_shazeer": dict(top_k=2, num_experts=4, expert_hidden=8, balance_loss="shazeer", dropout=0.1),
    "k2_switch_z": dict(top_k=2, num_experts=6, expert_hidden=8, balance_loss="switch", z_loss_weight=1e-3),
}


def make(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw.setdefault("expert_hidden", "auto" if "hidden" in kw else 8)  # tiny D: auto would miss by > 2%
    return create_head(HeadCfg(kind=kind, **kw), D, C)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head_contract_forward_backward(kind, variant):
    head = make(kind, **VARIANTS[variant]).train()
    x = torch.randn(B, D, requires_grad=True)
    logits, aux = head(x)
    assert logits.shape == (B, C) and torch.isfinite(logits).all()
    assert aux["balance_loss"].shape == () and torch.isfinite(aux["balance_loss"])
    (logits.square().mean() + aux["balance_loss"]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert head.num_params() == sum(p.numel() for p in head.parameters())
    assert 0 < head.active_macs() <= head.num_params()
    if kind == "dense":
        assert aux["balance_loss"].item() == 0.0 and "gates" not in aux
        return
    E = head.num_experts
    assert aux["gates"].shape == aux["probs"].shape == aux["router_logits"].shape == (B, E)
    assert aux["expert_index"].dtype == torch.long and aux["expert_index"].shape[0] == B
    assert torch.allclose(aux["probs"].sum(-1), torch.ones(B))


@pytest.mark.parametrize("kind", [k for k in sorted(HEADS) if k != "dense"])
@pytest.mark.parametrize("k", [1, 2])
def test_task_loss_alone_reaches_router_and_experts(kind, k):
    # balance_loss none: any router gradient must come through the combine weights (k = 1: Switch trick)
    head = make(kind, top_k=k, num_experts=4, balance_loss="none").train()
    logits, _ = head(torch.randn(B, D))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, C, (B,))).backward()
    assert head.router.w_gate.weight.grad.abs().sum() > 0
    for p in head.experts.parameters():
        assert p.grad.abs().sum() > 0
    if getattr(head.router, "w_noise", None) is not None:
        assert head.router.w_noise.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sparse_exactly_k_gates(k):
    head = make("sparse", top_k=k, num_experts=6).train()
    _, aux = head(torch.randn(B, D))
    assert ((aux["gates"] != 0).sum(-1) == k).all()
    assert aux["expert_index"].shape == (B, k)


def _run(head, x, dispatch, seed=1):
    head.dispatch = dispatch
    head.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)  # same gate noise for both paths
    logits, aux = head(x)
    (logits.pow(2).sum() + aux["balance_loss"]).backward()
    return logits.detach(), x.grad, {n: p.grad.clone() for n, p in head.named_parameters()}


@pytest.mark.parametrize("pad_limit", [0.0, float("inf")], ids=["slices", "padded"])
@pytest.mark.parametrize("k,E,batch", [(1, 4, 16), (2, 8, 33), (3, 6, 1), (2, 16, 64)])
def test_batched_equals_naive_values_and_gradients(k, E, batch, pad_limit, monkeypatch):
    monkeypatch.setattr(sparse_moe, "PAD_LIMIT", pad_limit)  # force each of the batched path's two branches
    monkeypatch.setattr(sparse_moe, "PAD_ROWS", 0)
    head = make("sparse", top_k=k, num_experts=E, expert_hidden=16, balance_loss="shazeer", dropout=0.0).train()
    x = torch.randn(batch, D)
    ref, ref_x, ref_p = _run(head, x, "naive")
    out, out_x, out_p = _run(head, x, "batched")
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out_x, ref_x, atol=1e-5)
    for name in ref_p:
        assert torch.allclose(out_p[name], ref_p[name], atol=1e-5), name


@pytest.mark.parametrize("pad_limit", [0.0, float("inf")], ids=["slices", "padded"])
def test_batched_equals_naive_when_routing_collapses(pad_limit, monkeypatch):
    # every row routed to expert 0 (one full group, the other groups empty)
    monkeypatch.setattr(sparse_moe, "PAD_LIMIT", pad_limit)
    monkeypatch.setattr(sparse_moe, "PAD_ROWS", 0)
    head = make("sparse", top_k=1, num_experts=4, noisy=False).eval()
    with torch.no_grad():
        head.router.w_gate.weight.zero_()
        head.router.w_gate.weight[0] = 1.0
    x = torch.rand(B, D)  # positive, so expert 0 wins every row
    head.dispatch = "naive"
    ref, aux = head(x)
    assert (aux["expert_index"] == 0).all()
    head.dispatch = "batched"
    assert torch.allclose(head(x)[0], ref, atol=1e-5)


def test_unknown_dispatch_rejected_at_call():
    head = make("sparse")
    head.dispatch = "loop"
    with pytest.raises(ValueError, match="unknown dispatch"):
        head(torch.randn(2, D))


@pytest.mark.parametrize("in_dim,classes,E,hidden", [(512, 10, 8, 512), (512, 100, 16, 512), (128, 10, 4, 256),
                                                      (512, 10, 64, 512)])
@pytest.mark.parametrize("kind", ["soft", "sparse"])
def test_auto_expert_hidden_matches_dense_params(kind, in_dim, classes, E, hidden):
    dense = create_head(HeadCfg(kind="dense", hidden=hidden), in_dim, classes)
    moe = create_head(HeadCfg(kind=kind, hidden=hidden, num_experts=E, top_k=2), in_dim, classes)
    assert dense.num_params() == mlp_num_params(in_dim, hidden, classes)
    assert abs(moe.num_params() - dense.num_params()) / dense.num_params() <= 0.02
    # the router is part of the budget: without it the experts alone would already be the whole budget
    router = sum(p.numel() for p in moe.router.parameters())
    assert router > 0 and moe.num_params() == router + sum(p.numel() for p in moe.experts.parameters())


def test_auto_expert_hidden_warns_when_budget_too_small():
    with pytest.warns(UserWarning, match="misses the dense budget"):
        create_head(HeadCfg(kind="sparse", hidden=4, num_experts=64), 16, 2)


def test_active_macs_by_hand():
    # in 512, C 10, E 8, k 2, H_e 64: router 512·8 = 4096; one expert 512·64 + 64·10 = 33408
    cfg = HeadCfg(kind="sparse", num_experts=8, top_k=2, expert_hidden=64)
    assert create_head(cfg, 512, 10).active_macs() == 4096 + 2 * 33408
    assert create_head(dataclasses.replace(cfg, kind="soft"), 512, 10).active_macs() == 4096 + 8 * 33408
    assert create_head(HeadCfg(kind="dense", hidden=512), 512, 10).active_macs() == 512 * 512 + 512 * 10


def test_gate_noise_only_in_training():
    head = make("sparse", top_k=2, num_experts=8, noisy=True)
    with torch.no_grad():
        head.router.w_noise.weight.normal_()
    x = torch.randn(B, D)
    head.eval()
    a, aux_a = head(x)
    b, aux_b = head(x)
    assert torch.equal(a, b) and torch.equal(aux_a["gates"], aux_b["gates"])
    head.train()
    c, aux_c = head(x)
    d, aux_d = head(x)
    assert not torch.equal(aux_c["gates"], aux_d["gates"]) and not torch.equal(c, d)
    quiet = make("sparse", top_k=2, num_experts=8, noisy=False).train()
    assert torch.equal(quiet(x)[1]["gates"], quiet(x)[1]["gates"])


def test_balance_loss_is_weighted_sum():
    head = make("soft", num_experts=4, balance_loss="kl_uniform", balance_weight=0.3, z_loss_weight=0.01)
    _, aux = head(torch.randn(B, D))
    expected = 0.3 * kl_uniform(aux["probs"]) + 0.01 * z_loss(aux["router_logits"])
    assert torch.allclose(aux["balance_loss"], expected)


def test_registry_is_the_only_lookup():
    assert set(HEADS) == {"dense", "soft", "sparse"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # default configs are well inside the 2% budget
        for kind, cls in HEADS.items():
            assert type(create_head(HeadCfg(kind=kind), D, C)) is cls
