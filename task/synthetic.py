"""The small verifiable task behind the embedded default: integer addition with a unique answer.

A problem is ``a+b`` with ``digits``-digit operands; the gold answer is the sum, and the
reference response works it out column by column before ``\\boxed{<sum>}``. Problems are split
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


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def has_carry(self) -> bool:
        return self.solution() != self.solution(drop_carries=True)

    @property
    def question(self) -> str:
        """The user turn. The paper's instruction suffix is left out: the tiny policy learns the
        boxed format from the warm start, and shorter prompts keep CPU steps cheap."""
        return f"What is {self.a}+{self.b}?"

    def solution(self, drop_carries: bool = False, slips: tuple[int, ...] = (), free: tuple[str, ...] = ()) -> str:
        """Reference response: column addition from the ones digit, carries included, then the box.

        ``347+285`` -> ``7+5=12 4+8+1=13 3+2+1=6 \\boxed{632}``. Each step is a one-digit fact,
        so the skill generalises to unseen operands; a wrong step anywhere makes the answer wrong.
        ``drop_carries=True`` writes the classic flawed variant that forgets every carry
        (``7+5=12 4+8=12 3+2=5 \\boxed{522}``): the imperfect demonstrations of the warm start.
        ``slips[i]`` (from the ones column) is added to column i's written total, a wrong digit fact that the
        rest of the working follows (``slips=(0, 1)``: ``7+5=12 4+8+1=14 3+2+1=6 \\boxed{642}``).
        ``free[i]`` is written before column i's step: text the verifier never reads, the reward-irrelevant free
        choices of the study task (``free=("kc", "ap")``: ``kc 7+5=12 ap 4+8+1=13 3+2+1=6 \\boxed{632}``).
        """
        da, db = str(self.a)[::-1], str(self.b)[::-1]
        steps, carry, digits = [], 0, []
        for i in range(max(len(da), len(db))):
            x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
            total = min(19, max(0, x + y + carry + (slips[i] if i < len(slips) else 0)))
            step = f"{x}+{y}+{carry}={total}" if carry else f"{x}+{y}={total}"
            steps.append(f"{free[i]} {step}" if i < len(free) and free[i] else step)
            carry, digits = (0 if drop_carries else total // 10), digits + [str(total % 10)]
        value = (str(carry) if carry else "") + "".join(reversed(digits))
        return " ".join(steps) + f" \\boxed{{{value}}}"

    def is_heldout(self, heldout_fraction: float) -> bool:
        digest = hashlib.sha256(f"{self.a}+{self.b}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32 < heldout_fraction


def sample_problems(n: int, seed: int, digits: int, split: str = "train", heldout_fraction: float = 0.1) -> list[Problem]:
    """``n`` distinct problems with ``digits``-digit operands of one split ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(seed)
    want_heldout = split == "heldout"
    seen: set[Problem] = set()
    out: list[Problem] = []
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    space = (high - low + 1) ** 2
    for _ in range(50 * n + 1000):
        if len(out) == n:
            break
        p = Problem(rng.randint(low, high), rng.randint(low, high))
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
        p = Problem(rng.randint(0, 999), rng.randint(0, 999))
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
