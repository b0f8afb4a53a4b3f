"""EntroAdv: entropy-based advantage bonus (Cheng et al., "Reasoning with Exploration: An Entropy
Perspective", arXiv 2506.14758)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_number
from ..registry import register


@dataclass
class EntroAdvConfig(AlgorithmConfig):
    """``alpha``: entropy scale α; ``kappa``: κ, the bonus is capped at |Â|/κ."""

    alpha: float
    kappa: float

    def validate(self) -> None:
        super().validate()
        check_number(self, "alpha", 0.0)
        check_number(self, "kappa", 0.0, lo_open=True)


def entropy_bonus_advantages(advantages, entropy, alpha: float, kappa: float) -> torch.Tensor:
    """[B, T]: Â + min(α·sg(H), |Â|/κ) — a non-negative bonus that never exceeds |Â|/κ."""
    return advantages + torch.minimum(alpha * entropy.detach(), advantages.abs() / kappa)


@register("entroadv")
class EntroAdv(Algorithm):
    """EntroAdv (arXiv 2506.14758): Â' = Â + min(α·sg(H_{i,t}), |Â_{i,t}|/κ)
    in the DAPO objective (α = 0.4, κ = 2)."""

    Config = EntroAdvConfig

    def shape_advantages(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        return entropy_bonus_advantages(advantages, entropy, self.config.alpha, self.config.kappa)
