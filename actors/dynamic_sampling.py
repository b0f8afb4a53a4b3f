"""DAPO dynamic sampling (Yu et al., arXiv 2503.14476, §3.2): train only on groups that carry signal.

A group (the G responses of one prompt) whose responses are all alike adds nothing useful to the
gradient but still dilutes token-mean normalisers. With ``algorithm.dynamic_sampling`` such groups are
dropped and the shard is topped up with further prompts, one extra rollout round at a time, for at most
``max_sampling_rounds`` rounds. "Alike" is ``algorithm.filter_metric``: ``accuracy`` (verl's DAPO recipes,
``filter_groups.metric=acc``) = all correct or all wrong by the verifier; ``reward`` (``seq_final_reward``)
= all shaped rewards equal (Â = 0 for every response under any group-relative estimator). A kept group's
advantages come from its shaped rewards either way. If the bound is hit, the shard keeps its shape by
re-adding dropped groups with ``train=False``: they enter no loss and no normaliser.

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

    def informative(self, metric: str) -> bool:
        """Whether the group carries signal by ``metric`` (``algorithm.filter_metric``): ``accuracy`` = its
        responses are not all correct or all wrong; ``reward`` = its shaped rewards are not all equal."""
        if metric not in ("accuracy", "reward"):
            raise ValueError(f"filter_metric: unknown {metric!r}; allowed: accuracy, reward")
        values = self.correct if metric == "accuracy" else self.rewards
        return bool(values.max() > values.min())


@dataclass
class Selection:
    """Groups of one shard: ``groups[k]`` enters the loss iff ``train[k]``; plus what it cost."""

    groups: list[Group]
    train: list[bool]
    sampled_groups: int  # groups drawn over all rounds
    filtered_groups: int  # of those, dropped as without signal (surplus informative ones are not counted)
    extra_rounds: int
    unfilled: int  # target slots filled with untrained groups (bound hit)


def select_groups(first: list[Group], sample_round: Callable[[int], list[Group]], enabled: bool,
                  max_rounds: int, metric: str) -> Selection:
    """Keep ``len(first)`` groups: all of ``first`` when disabled, else groups informative by ``metric``
    (:meth:`Group.informative`) in draw order.

    ``sample_round(r)`` (r = 1..max_rounds) draws the groups of extra round r; it is called only
    while fewer than ``len(first)`` informative groups are at hand.
    """
    target = len(first)
    if not enabled:
        return Selection(first, [True] * target, target, 0, 0, 0)
    kept = [g for g in first if g.informative(metric)]
    dropped = [g for g in first if not g.informative(metric)]
    sampled, rounds = target, 0
    while len(kept) < target and rounds < max_rounds:
        rounds += 1
        extra = sample_round(rounds)
        sampled += len(extra)
        kept += [g for g in extra if g.informative(metric)]
        dropped += [g for g in extra if not g.informative(metric)]
    kept = kept[:target]
    unfilled = target - len(kept)
    return Selection(kept + dropped[:unfilled], [True] * len(kept) + [False] * unfilled, sampled,
                     len(dropped), rounds, unfilled)
