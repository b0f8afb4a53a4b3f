"""Rule-based math verifier: final-answer extraction + symbolic equivalence via math-verify.

Public API::

    score(response, gold) -> float                       # 1.0 or 0.0
    verify(response, gold, timeout_s=5.0) -> Verdict     # Verdict(score, reason)
    verify_batch(responses, golds, timeout_s=5.0) -> list[Verdict]

``reason`` is one of ``correct``, ``wrong``, ``no_answer``, ``timeout``, ``parse_error``.
Identical strings and plain integer answers take a fast path that never touches math-verify (same result: integers are
compared exactly, and ``70`` equals ``70.0``). Everything else is judged in a sandboxed child
process (see ``verifier_pool``), so results are identical in threads, Ray tasks and Ray actors, and
each call is bounded in time and memory.
"""
from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from evaluation.extract import clean_answer, extract_answer
from evaluation.verifier_pool import get_pool

REASONS = ("correct", "wrong", "no_answer", "timeout", "parse_error")
DEFAULT_TIMEOUT_S = 4.0  # verification budget; a whole call stays under 5 s
MAX_ANSWER_CHARS = 1000   # longer "final answers" are rejected as parse_error without parsing
MAX_BRACE_DEPTH = 40

_INT_RE = re.compile(r"^[+-]?\d{1,50}(?:\.0*)?$")


@dataclass(frozen=True)
class Verdict:
    """Outcome of judging one response: ``score`` is 1.0 or 0.0, ``reason`` one of ``REASONS``."""

    score: float
    reason: str


class _LRU:
    """Small thread-safe LRU cache of deterministic verdict reasons keyed by (answer, gold)."""

    def __init__(self, maxsize: int = 100_000):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)


_CACHE = _LRU()


def _as_int(text: str) -> int | None:
    """``text`` as an integer when it is a plain integer (optionally ``.0``), else None."""
    text = text.replace(" ", "")
    if _INT_RE.match(text):
        return int(text.split(".")[0])
    return None


_TOWER_RE = re.compile(r"^\d{1,20}(?:\^\{?\d{1,20})+\}*$")
_TOWER_MAX_BITS = 1 << 22  # integers above ~1.2M digits are "too large" to be a benchmark answer


def _numeric_tower(text: str) -> int | float | None:
    """Exact value of a right-nested integer power tower such as ``9^{9^{9}}``.

    Returns ``float("inf")`` when the value would exceed ``_TOWER_MAX_BITS`` bits (decided from
    logarithms, without computing it), or None when ``text`` is not such a tower. This keeps
    adversarial towers from ever reaching sympy, which would try to expand them.
    """
    text = text.replace(" ", "")
    if "^" not in text or not _TOWER_RE.match(text):
        return None
    if text.count("{") != text.count("}") or any(
        text[i - 1] != "^" for i, ch in enumerate(text) if ch == "{"
    ):
        return None
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    value: int | float = numbers[-1]
    for base in reversed(numbers[:-1]):
        if base in (0, 1) or value == 0:
            value = 1 if value == 0 else base
        elif value == float("inf") or value > _TOWER_MAX_BITS / math.log2(base):
            value = float("inf")
        else:
            value = base ** value
    return value


def _brace_depth(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch == "{":
            depth += 1
            best = max(best, depth)
        elif ch == "}":
            depth -= 1
    return best


_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def normalize_gold(gold) -> str:
    """Gold answer as a clean string: lists joined by ", ", unescaped ``$`` removed."""
    if isinstance(gold, (list, tuple)):
        return ", ".join(normalize_gold(g) for g in gold)
    return clean_answer(_DOLLAR_RE.sub("", str(gold)))


def _verdict(reason: str) -> Verdict:
    return Verdict(1.0 if reason == "correct" else 0.0, reason)


def _precheck(answer: str | None, gold: str) -> str | None:
    """A reason decided without math-verify (None means: ask math-verify)."""
    if answer is None:
        return "no_answer"
    if len(answer) > MAX_ANSWER_CHARS or _brace_depth(answer) > MAX_BRACE_DEPTH:
        return "parse_error"
    if answer == gold:
        return "correct"  # identical strings: math-verify agrees (parsed or string comparison)
    a_int, g_int = _as_int(answer), _as_int(gold)
    if a_int is None and g_int is not None:
        a_int = _numeric_tower(answer)
    if a_int is not None and g_int is not None:
        return "correct" if a_int == g_int else "wrong"
    if a_int is None and _numeric_tower(answer) == float("inf"):
        # Too large to expand (sympy would hang); equal only to the same tower written differently.
        same = _numeric_tower(gold) is not None and re.findall(r"\d+", answer) == re.findall(r"\d+", gold)
        return "correct" if same else "wrong"
    return None


def _judge_answer(answer: str | None, gold: str, timeout_s: float) -> str:
    reason = _precheck(answer, gold)
    if reason is not None:
        return reason
    key = (answer, gold)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    reason = get_pool().judge(answer, gold, timeout_s)
    if reason != "timeout":
        _CACHE.put(key, reason)
    return reason


def clear_cache() -> None:
    """Forget cached verdicts (tests use it to exercise the worker pool again)."""
    global _CACHE
    _CACHE = _LRU()


def verify(response: str, gold, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """Judge ``response`` against ``gold`` within ``timeout_s`` seconds of verification time."""
    gold_s = normalize_gold(gold)
    return _verdict(_judge_answer(extract_answer(response), gold_s, timeout_s))


def score(response: str, gold) -> float:
    """1.0 when the final answer of ``response`` is equivalent to ``gold``, else 0.0."""
    return verify(response, gold).score


def verify_batch(
    responses: Sequence[str], golds: Sequence, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[Verdict]:
    """Judge many responses; items needing math-verify run in parallel across the worker pool.

    ``timeout_s`` bounds each item's verification (from the moment a pool worker takes it).
    """
    if len(responses) != len(golds):
        raise ValueError(f"verify_batch: {len(responses)} responses but {len(golds)} golds")
    answers = [extract_answer(r) for r in responses]
    golds_s = [normalize_gold(g) for g in golds]
    reasons: list[str | None] = [_precheck(a, g) for a, g in zip(answers, golds_s)]
    slow = [i for i, r in enumerate(reasons) if r is None]
    if len(slow) == 1:
        reasons[slow[0]] = _judge_answer(answers[slow[0]], golds_s[slow[0]], timeout_s)
    elif slow:
        pool = get_pool()
        with ThreadPoolExecutor(max_workers=min(pool.size, len(slow))) as ex:
            results = ex.map(lambda i: _judge_answer(answers[i], golds_s[i], timeout_s), slow)
            for i, reason in zip(slow, results):
                reasons[i] = reason
    return [_verdict(r) for r in reasons]
