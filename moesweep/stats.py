"""Seed statistics: pure functions on small samples (a handful of seeds), used by the sweep and the report.

- ``mean_ci``: mean, sample std and a Student-t confidence interval for the mean.
- ``bootstrap_diff_ci``: difference of two means with a deterministic percentile-bootstrap interval.
- ``welch_t``: Welch's unequal-variance t-test (same numbers as ``scipy.stats.ttest_ind(equal_var=False)``).

NaN values are dropped first (a failed seed is not a zero). Where a quantity is undefined (one seed: no
spread, no interval) the result is NaN, which the report prints as "n/a" rather than inventing a number.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import stats as _st

NAN = float("nan")


def _clean(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float).ravel()
    return x[np.isfinite(x)]


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-interval ``mean ± t_{(1+level)/2, n-1} · std/√n``.

    Returns ``(mean, std, lo, hi)``; with one value std and the interval are NaN, with none all four are.
    """
    x = _clean(values)
    n = len(x)
    if n == 0:
        return NAN, NAN, NAN, NAN
    mean = float(x.mean())
    if n == 1:
        return mean, NAN, NAN, NAN
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def bootstrap_diff_ci(a: Iterable[float], b: Iterable[float], n_boot: int = 10000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its percentile-bootstrap interval (each sample resampled on its own).

    Deterministic for a given ``seed``. The interval is NaN when either sample has fewer than two values:
    resampling one value always gives that value back, which would show a zero-width interval that
    claims a certainty the data do not have.
    """
    xa, xb = _clean(a), _clean(b)
    if len(xa) == 0 or len(xb) == 0:
        return NAN, NAN, NAN
    diff = float(xa.mean() - xb.mean())
    if len(xa) < 2 or len(xb) < 2:
        return diff, NAN, NAN
    rng = np.random.default_rng(seed)
    # Resampled means: index matrices [n_boot, n] -> row means [n_boot].
    ma = xa[rng.integers(0, len(xa), size=(n_boot, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), size=(n_boot, len(xb)))].mean(axis=1)
    lo, hi = np.quantile(ma - mb, [0.5 - level / 2, 0.5 + level / 2])
    return diff, float(lo), float(hi)


def welch_t(a: Iterable[float], b: Iterable[float]) -> tuple[float, float, float]:
    """Welch's t statistic, Welch–Satterthwaite degrees of freedom and the two-sided p-value.

    NaN (all three) when either sample has fewer than two values or both have zero variance, where the
    test is undefined (scipy returns NaN there too).
    """
    xa, xb = _clean(a), _clean(b)
    na, nb = len(xa), len(xb)
    if na < 2 or nb < 2:
        return NAN, NAN, NAN
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb  # squared standard errors of the two means
    se2 = va + vb
    if se2 == 0:
        return NAN, NAN, NAN
    t = float((xa.mean() - xb.mean()) / math.sqrt(se2))
    df = float(se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
    p = float(2 * _st.t.sf(abs(t), df))
    return t, df, p
