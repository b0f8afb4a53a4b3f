"""pass@k against brute-force enumeration of all k-subsets."""
import itertools
from math import comb

import pytest

from evaluation.metrics import avg_at_k, benchmark_metrics, pass_at_k


def brute_force_pass_at_k(scores, k):
    subsets = list(itertools.combinations(range(len(scores)), k))
    return sum(any(scores[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 4, 7, 10])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        scores = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(scores, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    assert pass_at_k(200, 1, 32) == pytest.approx(1 - comb(199, 32) / comb(200, 32))
    assert pass_at_k(32, 0, 32) == 0.0 and pass_at_k(32, 1, 32) == 1.0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 2)


def test_benchmark_metrics():
    m = benchmark_metrics([[1, 0, 0, 0], [0, 0, 0, 0]], k=4)
    assert m["avg"] == pytest.approx(12.5) and m["pass"] == pytest.approx(50.0)
    m2 = benchmark_metrics([[1, 0, 0, 0, 0, 0, 0, 0]], k=4)
    assert m2["pass"] == pytest.approx(brute_force_pass_at_k([1, 0, 0, 0, 0, 0, 0, 0], 4) * 100)
    assert avg_at_k([1, 1, 0, 0]) == 0.5
