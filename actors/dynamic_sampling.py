"""DAPO dynamic sampling (Yu et al., arXiv 2503.14476, §3.2): train only on groups that carry signal.

A group (the G responses of one prompt) whose rewards are all equal has Â = 0 for every response
under any group-relative estimator: it adds nothing to the gradient but still dilutes token-mean
normalisers. With ``algorithm.dynamic_sampling`` such groups are dropped and the shard is topped up
with further prompts, one extra rollout round at a time, for at most ``max_sampling_rounds`` rounds
(verl's ``filter_groups`` with ``metric=seq_final_reward``). If the bound is hit, the shard keeps its
shape by re-adding dropped groups with ``train=False``: they enter no loss and no normaliser.

Pure python: the rollout actor passes a ``sample_round(r)`` callable that draws round r's groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Group:
    """One prompt's G sampled and scored responses."""

    prompt_ids: list[int]
    gold: str
    response_ids: list[list[int]]
    texts: list[str]
    logprobs: list[list[float]]
    truncated: list[bool]
    rewards: np.ndarray  # [G] float32
    correct: np.ndarray  # [G] bool (verifier)
    reasons: list[str]

    @property
    def informative(self) -> bool:
        """True when the rewards are not all equal (some response has Â ≠ 0)."""
        return bool(self.rewards.max() > self.rewards.min())


@dataclass
class Selection:
    """Groups of one shard: ``groups[k]`` enters the loss iff ``train[k]``; plus what it cost."""

    groups: list[Group]
    train: list[bool]
    sampled_groups: int  # groups drawn over all rounds
    filtered_groups: int  # of those, dropped for equal rewards (surplus informative ones are not counted)
    extra_rounds: int
    unfilled: int  # target slots filled with untrained groups (bound hit)


def select_groups(first: list[Group], sample_round: Callable[[int], list[Group]], enabled: bool,
                  max_rounds: int) -> Selection:
    """Keep ``len(first)`` groups: all of ``first`` when disabled, else informative groups in draw order.

    ``sample_round(r)`` (r = 1..max_rounds) draws the groups of extra round r; it is called only
    while fewer than ``len(first)`` informative groups are at hand.
    """
    target = len(first)
    if not enabled:
        return Selection(first, [True] * target, target, 0, 0, 0)
    kept = [g for g in first if g.informative]
    dropped = [g for g in first if not g.informative]
    sampled, rounds = target, 0
    while len(kept) < target and rounds < max_rounds:
        rounds += 1
        extra = sample_round(rounds)
        sampled += len(extra)
        kept += [g for g in extra if g.informative]
        dropped += [g for g in extra if not g.informative]
    kept = kept[:target]
    unfilled = target - len(kept)
    return Selection(kept + dropped[:unfilled], [True] * len(kept) + [False] * unfilled, sampled,
                     len(dropped), rounds, unfilled)
