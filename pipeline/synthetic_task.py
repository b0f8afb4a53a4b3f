"""The small verifiable task behind the embedded default: integer arithmetic with a unique answer.

A problem is ``a <op> b`` with operands drawn from ``[0, max_operand]``; the gold answer is the
integer result and a correct response ends with ``\\boxed{<result>}``. Problems are split
deterministically into train and held-out by a hash of the operands, so the held-out set never
overlaps the prompts RL trains on. Rows are written in the common RLVR parquet layout (the
layout of ``../shared/data/train``): ``prompt`` (chat messages), ``reward_model.ground_truth``,
``extra_info.answer``, ``data_source``, ``ability`` — so the same reader serves both.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterator

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return OPS[self.op](self.a, self.b)

    @property
    def question(self) -> str:
        """The user turn. The paper's instruction suffix is left out: the tiny policy learns the
        boxed format from the warm start, and shorter prompts keep CPU steps cheap."""
        return f"What is {self.a}{self.op}{self.b}?"

    def solution(self, answer: int | None = None) -> str:
        """The reference response: ``a+b=c. The answer is \\boxed{c}.``"""
        value = self.answer if answer is None else answer
        return f"{self.a}{self.op}{self.b}={value}. The answer is \\boxed{{{value}}}."

    def is_heldout(self, heldout_fraction: float) -> bool:
        digest = hashlib.sha256(f"{self.a}{self.op}{self.b}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32 < heldout_fraction


def sample_problems(
    n: int, seed: int, max_operand: int, ops: str = "+", split: str = "train", heldout_fraction: float = 0.1
) -> list[Problem]:
    """``n`` distinct problems of one split ("train" or "heldout"), deterministic in ``seed``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(seed)
    want_heldout = split == "heldout"
    seen: set[Problem] = set()
    out: list[Problem] = []
    space = (max_operand + 1) ** 2 * len(ops)
    for _ in range(50 * n + 1000):
        if len(out) == n:
            break
        p = Problem(rng.randint(0, max_operand), rng.choice(ops), rng.randint(0, max_operand))
        if p in seen or p.is_heldout(heldout_fraction) != want_heldout:
            continue
        seen.add(p)
        out.append(p)
    if len(out) < n:
        raise ValueError(f"cannot draw {n} distinct {split} problems from a space of ~{space}")
    return out


def to_rows(problems: list[Problem], source: str = "synthetic_arith") -> list[dict]:
    """Rows in the RLVR parquet layout (see module docstring)."""
    return [
        {
            "prompt": [{"role": "user", "content": p.question}],
            "reward_model": {"ground_truth": str(p.answer), "style": "rule"},
            "extra_info": {"answer": str(p.answer), "index": i},
            "data_source": source,
            "ability": "math",
        }
        for i, p in enumerate(problems)
    ]


def write_parquet(problems: list[Problem], path: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(to_rows(problems)), path)
    return path


def tokenizer_corpus() -> Iterator[str]:
    """Text the tiny tokenizer is trained on: task problems/solutions and generic math prose."""
    rng = random.Random(1234)
    for _ in range(3000):
        p = Problem(rng.randint(0, 999), rng.choice("+-*"), rng.randint(0, 999))
        yield p.question + " " + INSTRUCTION
        yield p.solution()
    generic = (
        "Let x be a real number such that x^2 + 2x + 1 = 0. Find all solutions. "
        "The sum of the angles of a triangle is 180 degrees. Compute \\frac{1}{2} + \\frac{1}{3}. "
        "Therefore the final answer is \\boxed{\\frac{5}{6}}. Simplify \\sqrt{8} = 2\\sqrt{2}. "
        "Hello, how are you? The quick brown fox jumps over the lazy dog. user assistant system"
    )
    for _ in range(200):
        yield generic
