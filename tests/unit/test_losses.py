"""Balance and router losses against numbers worked by hand (arithmetic in the comments)."""

import math

import pytest
import torch

from moesweep.models.heads.losses import (
    aux_loss, balance, cv_squared, kl_uniform, shazeer, smooth_load, switch, z_loss,
)
from moesweep.models.heads.routing import Routing


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_kl_uniform_hand_numbers():
    # p̄ = mean([1, 0], [0.5, 0.5]) = [0.75, 0.25]
    # KL(p̄ ‖ u) = 0.75·ln(0.75·2) + 0.25·ln(0.25·2) = 0.75·0.405465 − 0.25·0.693147 = 0.130812
    assert kl_uniform(t([[1.0, 0.0], [0.5, 0.5]])).item() == pytest.approx(0.130812, abs=1e-6)


def test_kl_uniform_extremes():
    # uniform mean routing -> 0 even if each sample is confident; all mass on one expert -> ln E
    assert kl_uniform(t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_uniform(t([[0.0, 1.0, 0.0]] * 4)).item() == pytest.approx(math.log(3), abs=1e-6)


def test_cv_squared_uses_population_variance():
    # [1, 3]: mean 2, population variance ((1−2)² + (3−2)²)/2 = 1 -> CV² = 1/4
    assert cv_squared(t([1.0, 3.0])).item() == pytest.approx(0.25)
    assert cv_squared(t([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)


# Two samples, E = 2, k = 1 (the worked example for the Shazeer load estimator):
#   row 0: clean [1, 0], noisy [1.5, −0.5], std [1, 1] -> top-1 = expert 0
#   row 1: clean [0, 0], noisy [−1, 1],    std [2, 2] -> top-1 = expert 1
CLEAN, NOISY, STD = t([[1.0, 0.0], [0.0, 0.0]]), t([[1.5, -0.5], [-1.0, 1.0]]), t([[1.0, 1.0], [2.0, 2.0]])
INDEX = torch.tensor([[0], [1]])
GATES = t([[0.7, 0.0], [0.0, 0.9]])


def test_smooth_load_hand_numbers():
    # The threshold for expert i is the k-th largest noisy logit among the others:
    # row 0, e0 (in):  other = −0.5 -> Φ((1 − (−0.5))/1) = Φ(1.5)  = 0.933193
    # row 0, e1 (out): other =  1.5 -> Φ((0 − 1.5)/1)    = Φ(−1.5) = 0.066807
    # row 1, e0 (out): other =  1   -> Φ((0 − 1)/2)      = Φ(−0.5) = 0.308538
    # row 1, e1 (in):  other = −1   -> Φ((0 + 1)/2)      = Φ(0.5)  = 0.691462
    # load = [0.933193 + 0.308538, 0.066807 + 0.691462] = [1.241731, 0.758269]
    load = smooth_load(CLEAN, NOISY, STD, INDEX)
    assert load.tolist() == pytest.approx([1.241731, 0.758269], abs=1e-5)


def test_shazeer_hand_numbers():
    # load [1.241731, 0.758269]: mean 1, population var 0.241731² = 0.058434 -> CV² = 0.058434
    # importance = gate column sums [0.7, 0.9]: mean 0.8, var 0.1² = 0.01 -> CV² = 0.01/0.64 = 0.015625
    # total = 0.074059
    assert shazeer(GATES, INDEX, CLEAN, NOISY, STD).item() == pytest.approx(0.074059, abs=1e-5)


def test_shazeer_without_noise_counts_load():
    # eval / noisy=False: load = hard counts [1, 1] (CV² 0), so only importance's 0.015625 remains
    assert shazeer(GATES, INDEX, CLEAN, CLEAN, None).item() == pytest.approx(0.015625, abs=1e-6)


def test_shazeer_with_k_equal_e_has_balanced_load():
    # k = E: every expert always selected, load = counts [2, 2] (CV² 0), no (k+1)-th logit needed
    gates = t([[0.6, 0.4], [0.2, 0.8]])  # importance [0.8, 1.2]: mean 1, var 0.04 -> CV² 0.04
    index = torch.tensor([[0, 1], [1, 0]])
    assert shazeer(gates, index, CLEAN, NOISY, STD).item() == pytest.approx(0.04, abs=1e-6)


def test_smooth_load_matches_resampled_selection_rate():
    # P(x, i) is the chance expert i stays in the top k when only its own noise is redrawn.
    torch.manual_seed(0)
    clean, std = t([[0.3, 0.0, -0.2, 0.1]]), t([[0.5, 1.0, 0.8, 0.6]])
    noisy = clean + torch.randn(1, 4) * std
    index = noisy.topk(2, dim=-1).indices
    p = smooth_load(clean, noisy, std, index)
    n = 40000
    for i in range(4):
        redraw = noisy.repeat(n, 1)
        redraw[:, i] = clean[0, i] + torch.randn(n) * std[0, i]
        rate = (redraw.topk(2, dim=-1).indices == i).any(-1).float().mean().item()
        assert rate == pytest.approx(p[i].item(), abs=0.01)


def test_switch_hand_numbers():
    # E = 2; both samples pick expert 0: f = [1, 0]; P = mean([0.8, 0.2], [0.4, 0.6]) = [0.6, 0.4]
    # loss = E · Σ f_i P_i = 2 · (1·0.6 + 0·0.4) = 1.2
    assert switch(t([[0.8, 0.2], [0.4, 0.6]]), torch.tensor([[0], [0]])).item() == pytest.approx(1.2)
    # E = 3, k = 2: assignments {0, 1}, {0, 2} -> f = [2, 1, 1]/4; P = [0.5, 0.3, 0.2]
    # loss = 3 · (0.5·0.5 + 0.25·0.3 + 0.25·0.2) = 3 · 0.375 = 1.125
    probs = t([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert switch(probs, torch.tensor([[0, 1], [0, 2]])).item() == pytest.approx(1.125)


def test_z_loss_hand_numbers():
    # logsumexp([0, 0]) = ln 2; logsumexp([ln 3, ln 3]) = ln 6
    # mean of squares = ((ln 2)² + (ln 6)²)/2 = (0.480453 + 3.210402)/2 = 1.845427
    logits = t([[0.0, 0.0], [math.log(3), math.log(3)]])
    assert z_loss(logits).item() == pytest.approx(1.845427, abs=1e-5)


def _routing() -> Routing:
    probs = torch.softmax(CLEAN, -1)
    return Routing(CLEAN, NOISY, STD, probs, INDEX, GATES.gather(1, INDEX), GATES)


def test_aux_loss_weights_balance_and_z():
    r = _routing()
    # 0.5 · shazeer (0.074059) + 0.1 · z-loss of CLEAN
    expected = 0.5 * 0.074059 + 0.1 * z_loss(CLEAN).item()
    assert aux_loss("shazeer", r, 0.5, 0.1).item() == pytest.approx(expected, abs=1e-5)
    assert aux_loss("none", r, 0.5, 0.0).item() == 0.0
    assert balance("switch", r).item() == pytest.approx(switch(r.probs, INDEX).item())
    assert balance("kl_uniform", r).item() == pytest.approx(kl_uniform(r.probs).item())
    with pytest.raises(ValueError, match="unknown balance loss"):
        balance("entropy", r)
