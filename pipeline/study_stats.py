"""Paired statistics of a study: arm against baseline, paired by seed (pure Python/numpy, no scipy).

For one contrast and one metric, ``d_i = arm_i − baseline_i`` over the n seeds where both runs finished,
were valid and have a value. Then (two-sided α = 0.05, paired t-test, Student's t with ν = n − 1):

    mean  d̄ = Σ d_i / n
    sd    s = sqrt(Σ (d_i − d̄)² / (n − 1))                 (ddof = 1)
    95% CI  d̄ ± t_{0.975,ν} · s / √n
    mde80 = (t_{0.975,ν} + t_{0.80,ν}) · s / √n
    seeds for a target Δ: the smallest n >= 2 with (t_{0.975,n−1} + t_{0.80,n−1}) · s / √n <= Δ

``mde80`` is the smallest true mean difference the paired t-test detects with 80% power at this n and
this sd (the usual normal-shift approximation, with t quantiles in place of z). Student's t quantiles
come from :func:`t_quantile`: bisection on :func:`t_cdf`, which uses the regularized incomplete beta
function (continued fraction, Numerical Recipes §6.4).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

ALPHA = 0.05
POWER = 0.80


def _beta_cf(a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b) = B(x; a, b) / B(a, b)`` for a, b > 0, 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: with x = df / (df + t²),
    P(T <= t) = 1 − I_x(df/2, 1/2) / 2 for t >= 0, and I_x(df/2, 1/2) / 2 for t < 0."""
    if df <= 0:
        raise ValueError(f"t_cdf: df must be > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float, tol: float = 1e-12) -> float:
    """The t with P(T <= t) = p (Student's t, ``df`` degrees of freedom), by bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df, tol)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def paired_summary(diffs: Sequence[float]) -> dict:
    """{n, mean_diff, sd_diff, ci95: [low, high], mde80} of paired differences (formulas: module docstring).

    n = 0: mean_diff is None; n = 1: only n and mean_diff (the rest None: no spread to estimate)."""
    d = np.asarray(list(diffs), dtype=np.float64)
    n = int(d.size)
    out = {"n": n, "mean_diff": float(d.mean()) if n else None, "sd_diff": None, "ci95": None, "mde80": None}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t_ci, t_power = t_quantile(1.0 - ALPHA / 2, n - 1), t_quantile(POWER, n - 1)
    out.update(sd_diff=sd, ci95=[out["mean_diff"] - t_ci * se, out["mean_diff"] + t_ci * se],
               mde80=(t_ci + t_power) * se)
    return out


def paired_differences(arm: dict[int, Optional[float]], baseline: dict[int, Optional[float]]
                       ) -> tuple[list[int], list[float]]:
    """(seeds, arm − baseline) over the seeds both ``{seed: value}`` maps hold with a value (not None/NaN)."""
    def ok(v):
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    seeds = sorted(s for s in arm if s in baseline and ok(arm[s]) and ok(baseline[s]))
    return seeds, [float(arm[s]) - float(baseline[s]) for s in seeds]


def seeds_needed(sd: float, delta: float, max_n: int = 10_000) -> Optional[int]:
    """The smallest n >= 2 whose mde80 at paired-difference sd ``sd`` is <= ``delta`` (a pilot's sd -> how many
    seeds detect ``delta`` with 80% power); None if not even ``max_n`` seeds do."""
    if delta <= 0:
        raise ValueError(f"seeds_needed: delta must be > 0, got {delta}")

    def detects(n: int) -> bool:
        return (t_quantile(1.0 - ALPHA / 2, n - 1) + t_quantile(POWER, n - 1)) * sd / math.sqrt(n) <= delta

    if not detects(max_n):
        return None
    lo, hi = 1, max_n  # mde80 falls as n grows: bisect for the first n that detects delta
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detects(mid) else (mid, hi)
    return hi
