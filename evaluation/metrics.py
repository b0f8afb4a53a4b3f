"""Avg@k and the unbiased Pass@k estimator (Chen et al., 2021)."""
from __future__ import annotations

from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n``
    samples (``c`` of them correct) is correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as a running product, stable for large ``n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def avg_at_k(scores: Sequence[float]) -> float:
    """Mean correctness of one problem's samples (the estimator of Avg@k for any k <= n)."""
    if not scores:
        raise ValueError("avg_at_k: no samples")
    return sum(scores) / len(scores)


def benchmark_metrics(per_problem_scores: Sequence[Sequence[float]], k: int) -> dict:
    """Avg@k and Pass@k (both in percent) over problems, each with ``n >= k`` 0/1 scores."""
    if not per_problem_scores:
        raise ValueError("benchmark_metrics: no problems")
    avgs, passes = [], []
    for scores in per_problem_scores:
        n, c = len(scores), int(round(sum(scores)))
        avgs.append(avg_at_k(scores))
        passes.append(pass_at_k(n, c, k))
    return {
        "avg": 100.0 * sum(avgs) / len(avgs),
        "pass": 100.0 * sum(passes) / len(passes),
        "k": k,
        "n": min(len(s) for s in per_problem_scores),
        "num_problems": len(per_problem_scores),
    }
