"""moesweep.stats against hand-worked numbers and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from moesweep.stats import bootstrap_diff_ci, mean_ci, welch_t


def test_mean_ci_hand_numbers():
    # x = 1, 2, 3: mean 2, sample var ((1)^2 + 0 + 1^2) / 2 = 1, std 1, se 1/sqrt(3) = 0.57735.
    # t_{0.975, 2} = 4.302653, so the half-width is 4.302653 * 0.57735 = 2.484138.
    mean, std, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert std == pytest.approx(1.0)
    assert lo == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert hi == pytest.approx(2.0 + 2.484138, abs=1e-6)


def test_mean_ci_level_and_scipy():
    x = [0.871, 0.868, 0.875, 0.873, 0.870]
    _, _, lo, hi = mean_ci(x, level=0.9)
    ref = st.t.interval(0.9, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)


def test_mean_ci_one_value_and_empty_and_nan():
    mean, std, lo, hi = mean_ci([0.5])
    assert mean == 0.5 and math.isnan(std) and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    # A NaN (failed seed) is dropped, not averaged: same as the two finite values alone.
    assert mean_ci([1.0, float("nan"), 3.0]) == pytest.approx(mean_ci([1.0, 3.0]))


def test_bootstrap_diff_ci_deterministic_and_contains_diff():
    a, b = [0.874, 0.871, 0.877, 0.872, 0.876], [0.870, 0.871, 0.869, 0.872, 0.873]
    diff, lo, hi = bootstrap_diff_ci(a, b, n_boot=4000, seed=3)
    # Difference of means: 0.874 - 0.871 = 0.003.
    assert diff == pytest.approx(0.003, abs=1e-12)
    assert lo < diff < hi
    assert (diff, lo, hi) == bootstrap_diff_ci(a, b, n_boot=4000, seed=3)
    assert (lo, hi) != bootstrap_diff_ci(a, b, n_boot=4000, seed=4)[1:]


def test_bootstrap_diff_ci_width_matches_normal_theory():
    # Large samples: the percentile interval approaches diff ± 1.96 * sqrt(va/na + vb/nb).
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 2.0, 400)
    diff, lo, hi = bootstrap_diff_ci(a, b, n_boot=5000)
    se = math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.08)


def test_bootstrap_diff_ci_one_seed_is_nan_interval():
    diff, lo, hi = bootstrap_diff_ci([0.9], [0.8, 0.82])
    assert diff == pytest.approx(0.09)
    assert math.isnan(lo) and math.isnan(hi)


# scipy warns about precision loss on the constant sample; the numbers still agree.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("a,b", [
    ([0.874, 0.871, 0.877, 0.872, 0.876], [0.870, 0.871, 0.869]),
    ([1.0, 2.0, 4.0, 8.0], [3.0, 3.5, 2.5, 3.2, 2.9, 3.1]),
    ([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]),  # one sample without spread
])
def test_welch_matches_scipy(a, b):
    t, df, p = welch_t(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    assert df == pytest.approx(ref.df, rel=1e-10)


def test_welch_hand_numbers():
    # a = 1,2,3 (mean 2, var 1), b = 4,5,6 (mean 5, var 1): se^2 = 1/3 + 1/3 = 2/3,
    # t = -3 / sqrt(2/3) = -3.674235; df = (2/3)^2 / ((1/3)^2/2 * 2) = 4.
    t, df, _ = welch_t([1, 2, 3], [4, 5, 6])
    assert t == pytest.approx(-3.674235, abs=1e-6)
    assert df == pytest.approx(4.0)


def test_welch_undefined_is_nan():
    assert all(math.isnan(v) for v in welch_t([1.0], [1.0, 2.0]))
    assert all(math.isnan(v) for v in welch_t([2.0, 2.0], [2.0, 2.0]))
