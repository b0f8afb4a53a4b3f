"""Sequence-level advantage estimators, chosen by name (``advantage_estimator`` in the YAML).

Each estimator maps rewards [B] float and group_ids [B] int (responses of one prompt share an id)
to advantages [B] in the rewards' dtype. Computation is in float64; no NaN for any input group.
Add one with ``@advantage_estimator("name")``.
"""
from __future__ import annotations

from typing import Callable

import torch

from core.registry import Registry

from .group_stats import group_index, group_reward_mean_std

Estimator = Callable[..., torch.Tensor]
ESTIMATORS: Registry[Estimator] = Registry("advantage estimator", key="advantage_estimator")

# Estimators without a baseline: Â = r, so they need signed rewards (+1 correct, −1 wrong). With 0/1
# rewards a wrong answer gets Â = 0 and teaches nothing. See ``Algorithm.requires_signed_rewards``.
SIGNED_REWARD_ESTIMATORS = frozenset({"reward"})
# Estimators with a group baseline: a group of one response (G = 1) gets Â = 0, so they need G ≥ 2.
GROUP_RELATIVE_ESTIMATORS = frozenset({"grpo", "dr_grpo", "rloo"})


def advantage_estimator(name: str):
    """Decorator registering an estimator ``fn(rewards, group_ids, eps) -> [B]`` under ``name``."""
    return ESTIMATORS.register(name)


def known_estimators() -> list[str]:
    """Sorted names of the registered estimators."""
    return ESTIMATORS.names()


def compute_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, estimator: str = "grpo",
                       eps: float = 1e-6) -> torch.Tensor:
    """Dispatch to the estimator ``estimator``; rewards [B], group_ids [B] -> [B]."""
    out = ESTIMATORS.get(estimator)(rewards, group_ids, eps)
    return out.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


@advantage_estimator("grpo")
def grpo_advantages(rewards, group_ids, eps):
    """GRPO (DeepSeekMath, arXiv 2402.03300): Â_i = (r_i − mean_g r) / (std_g r + ε).

    std is the unbiased sample std (as in verl/TRL); a single-response group has std 0, so Â = 0.
    All-equal rewards give Â = 0 (no NaN thanks to ε > 0, and exactly 0 even with ε = 0).
    """
    mean, std, _ = group_reward_mean_std(rewards, group_ids)
    centred = rewards.to(torch.float64) - mean
    return torch.where(centred == 0, torch.zeros_like(centred), centred / (std + eps))


@advantage_estimator("dr_grpo")
def dr_grpo_advantages(rewards, group_ids, eps):
    """Dr.GRPO (Liu et al., arXiv 2503.20783): Â_i = r_i − mean_g r (no std normalisation)."""
    mean, _, _ = group_reward_mean_std(rewards, group_ids)
    return rewards.to(torch.float64) - mean


@advantage_estimator("rloo")
def rloo_advantages(rewards, group_ids, eps):
    """RLOO (Ahmadian et al., arXiv 2402.14740): Â_i = r_i − mean_{j≠i} r_j = G/(G−1)·(r_i − mean_g r).

    A single-response group has no baseline: Â = 0.
    """
    mean, _, size = group_reward_mean_std(rewards, group_ids)
    scale = torch.where(size > 1, size / (size - 1).clamp_min(1), torch.zeros_like(size))
    return (rewards.to(torch.float64) - mean) * scale


@advantage_estimator("reward")
def raw_reward_advantages(rewards, group_ids, eps):
    """Raw reward as advantage (W-REINF, Zhu et al. arXiv 2506.01347): Â_i = r_i.

    Needs ±1 rewards (listed in ``SIGNED_REWARD_ESTIMATORS``): with 0/1 rewards wrong answers get Â = 0.
    """
    return rewards.to(torch.float64).clone()


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling (arXiv 2503.14476): bool [B], False for responses of all-equal-reward groups."""
    idx, n = group_index(group_ids)
    r = rewards.to(torch.float64)
    hi = torch.full((n,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, idx, r, "amax")
    lo = torch.full((n,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, idx, r, "amin")
    return (hi > lo)[idx]
