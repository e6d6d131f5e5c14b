"""Routers: hand-checked gates, top-k sparsity, Switch-style k = 1 weights, noise only in training."""

import math

import pytest
import torch
import torch.nn.functional as F

from moesweep.models.heads.routing import NoisyTopKRouter, SoftRouter


def _set(linear: torch.nn.Linear, weight: list[list[float]]) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))


def test_soft_router_temperature_hand_numbers():
    # x = [1]; logits [0, ln 3]. T = 1: softmax -> [1/4, 3/4]. T = 2: [1, √3]/(1 + √3) = [0.366025, 0.633975]
    r = SoftRouter(1, 2, temperature=1.0)
    _set(r.w_gate, [[0.0], [math.log(3)]])
    out = r(torch.ones(1, 1))
    assert out.gates[0].tolist() == pytest.approx([0.25, 0.75])
    assert out.expert_index.tolist() == [[1]]
    r.temperature = 2.0
    assert r(torch.ones(1, 1)).gates[0].tolist() == pytest.approx([0.366025, 0.633975], abs=1e-6)


def test_top2_softmax_over_kept_logits():
    # logits [1, 2, 3, 0], k = 2: keep experts 2 and 1; softmax([3, 2]) = [1/(1+e^-1), e^-1/(1+e^-1)]
    #                                                              = [0.731059, 0.268941]
    r = NoisyTopKRouter(1, 4, k=2, noisy=False).eval()
    _set(r.w_gate, [[1.0], [2.0], [3.0], [0.0]])
    out = r(torch.ones(1, 1))
    assert out.expert_index.tolist() == [[2, 1]]
    assert out.gates[0].tolist() == pytest.approx([0.0, 0.268941, 0.731059, 0.0], abs=1e-6)


def test_top1_weight_is_full_softmax_probability():
    # k = 1 (Switch style): weight = softmax([1, 2, 3, 0])[2] = e^3/(e + e² + e³ + 1) = 0.643914, not 1
    r = NoisyTopKRouter(1, 4, k=1, noisy=False).eval()
    _set(r.w_gate, [[1.0], [2.0], [3.0], [0.0]])
    out = r(torch.ones(1, 1))
    assert out.expert_index.tolist() == [[2]]
    assert out.expert_weight.item() == pytest.approx(0.643914, abs=1e-6)
    assert out.expert_weight.item() == pytest.approx(out.probs[0, 2].item())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exactly_k_nonzero_gates(k):
    torch.manual_seed(0)
    r = NoisyTopKRouter(16, 6, k=k).train()
    out = r(torch.randn(64, 16))
    assert ((out.gates > 0).sum(-1) == k).all()
    assert out.expert_index.shape == (64, k)
    # the non-zero gates sit exactly on the chosen experts
    assert torch.equal(out.gates.gather(1, out.expert_index), out.expert_weight)
    if k > 1:
        assert torch.allclose(out.gates.sum(-1), torch.ones(64))


def test_noise_formula_and_training_only():
    # H = x W_g + ε · (softplus(x W_noise) + floor), with the same ε the router drew
    torch.manual_seed(0)
    r = NoisyTopKRouter(8, 4, k=2, noise_floor=0.05)
    torch.nn.init.normal_(r.w_noise.weight)
    x = torch.randn(5, 8)
    torch.manual_seed(1)
    out = r.train()(x)
    torch.manual_seed(1)
    eps = torch.randn(5, 4)
    std = F.softplus(x @ r.w_noise.weight.T) + 0.05
    assert torch.allclose(out.noise_std, std)
    assert torch.allclose(out.noisy_logits, x @ r.w_gate.weight.T + eps * std, atol=1e-6)
    # a second training call draws fresh noise
    assert not torch.equal(r(x).noisy_logits, out.noisy_logits)
    # eval: no noise, deterministic, probs from clean logits
    r.eval()
    a, b = r(x), r(x)
    assert a.noise_std is None and torch.equal(a.noisy_logits, a.logits)
    assert torch.equal(a.gates, b.gates)
    assert torch.allclose(a.probs, torch.softmax(a.logits, -1))


def test_noisy_false_has_no_noise_projection():
    r = NoisyTopKRouter(8, 4, k=2, noisy=False).train()
    assert r.w_noise is None
    x = torch.randn(3, 8)
    assert torch.equal(r(x).gates, r(x).gates)


def test_invalid_k_rejected():
    with pytest.raises(ValueError, match="top_k"):
        NoisyTopKRouter(4, 3, k=4)
