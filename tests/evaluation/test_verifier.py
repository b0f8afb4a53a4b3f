"""Verifier: extraction, equivalence, adversarial inputs, threads and reference solutions."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from evaluation import verifier
from evaluation.extract import extract_answer
from evaluation.verifier import Verdict, score, verify, verify_batch
from tests.evaluation.reference import REFERENCE_BENCHMARKS, reference_pairs

EQUIVALENT = [
    ("so the answer is \\boxed{70}", "70.0"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{6}{2}}", "3"),
    ("\\boxed{(1,2)}", "(1,2)"),
    ("\\boxed{[1, 2)}", "[1,2)"),
    ("\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{10\\%}", "10\\%"),
    ("The answer is 42.", "42"),
    ("Answer: $\\sqrt{2}$", "\\sqrt 2"),
    ("#### 18", "18"),
]
NOT_EQUIVALENT = [("\\boxed{71}", "70"), ("\\boxed{\\frac{1}{3}}", "0.5"), ("\\boxed{(1,2]}", "[1,2)")]


@pytest.mark.parametrize("response,gold", EQUIVALENT)
def test_equivalent(response, gold):
    assert verify(response, gold) == Verdict(1.0, "correct")
    assert score(response, gold) == 1.0


@pytest.mark.parametrize("response,gold", NOT_EQUIVALENT)
def test_not_equivalent(response, gold):
    assert verify(response, gold) == Verdict(0.0, "wrong")


def test_power_towers_never_reach_sympy():
    assert verify("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{9}}}").reason == "correct"
    assert verify("\\boxed{9^{9^{9^{9}}}}", "9^{ 9^{9^{9}} }").reason == "correct"
    assert verify("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{8}}}").reason == "wrong"
    assert verify("\\boxed{2^{2^{2}}}", "16").reason == "correct"


def test_last_boxed_wins_and_nested_braces():
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert verify("no answer here", "3") == Verdict(0.0, "no_answer")
    assert verify("", "3").reason == "no_answer"


def test_integer_fast_path_matches_math_verify():
    """The fast path must agree with math-verify itself (called through the worker pool)."""
    from evaluation.verifier_pool import get_pool
    pairs = [("70", "70.0"), ("70", "71"), ("-3", "-3"), ("007", "7"), ("0", "0.000"), ("12", "12.5"),
             ("\\frac{1}{2}", "\\frac{1}{2}"), ("\\text{(B)}", "\\text{(B)}"), ("2^{10}", "1024"),
             ("2^{2^{2}}", "16"), ("2^{2^{2}}", "17"), ("3^{4}", "81.0")]
    for answer, gold in pairs:
        fast = verify(f"\\boxed{{{answer}}}", gold).reason
        slow = get_pool().judge(answer, gold, 10.0)
        assert fast == slow, (answer, gold, fast, slow)


ADVERSARIAL = [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "\\boxed{" + "x" * 1_000_000 + "}",
    "a" * 2_000_000,
    "\\boxed{" * 100_000,
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "\\boxed{__import__('os').system('touch /tmp/eapo_pwned')}",
    "The answer is __import__('os').system('touch /tmp/eapo_pwned')",
    "\\boxed{(lambda: [0] * 10**12)()}",
    "\\boxed{\\frac{" * 5000,
]


@pytest.mark.parametrize("response", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_scores_zero_within_bound(response):
    start = time.monotonic()
    v = verify(response, "5")
    assert v.score == 0.0 and v.reason in verifier.REASONS
    assert time.monotonic() - start < 5.0
    assert not os.path.exists("/tmp/eapo_pwned")


def test_hang_is_bounded_and_pool_survives(monkeypatch):
    """A symbolic comparison that hangs is killed at the timeout and the pool keeps working."""
    hard = "\\boxed{(x+1)^{2000} - (x-1)^{2000}}"
    start = time.monotonic()
    v = verify(hard, "\\sum_{k=0}^{100} x^k", timeout_s=1.0)
    assert time.monotonic() - start < 3.0 and v.score == 0.0
    assert verify("\\boxed{\\frac{1}{2}}", "0.5").score == 1.0


def test_threads_match_main_thread():
    cases = EQUIVALENT + NOT_EQUIVALENT + [(r, "5") for r in ADVERSARIAL[:3]]
    expected = [verify(r, g) for r, g in cases]
    verifier.clear_cache()
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda c: verify(*c), cases))
    assert got == expected


def test_batch_validates_lengths():
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        verify_batch(["a", "b"], ["1"])


@pytest.mark.parametrize("name", REFERENCE_BENCHMARKS)
def test_reference_solutions_in_threads(name):
    """Full benchmark: own solution correct, another problem's solution wrong (each >= 99%)."""
    triples = reference_pairs(name)
    verifier.clear_cache()
    with ThreadPoolExecutor(4) as ex:
        own = list(ex.map(lambda t: verify(t[0], t[1]).score, triples))
        other = list(ex.map(lambda t: verify(t[2], t[1]).score, triples))
    n = len(triples)
    assert sum(own) / n >= 0.99
    assert 1 - sum(other) / n >= 0.99
