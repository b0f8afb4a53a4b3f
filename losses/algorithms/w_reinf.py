"""W-REINF: weighted REINFORCE (Zhu et al., "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning", arXiv 2506.01347)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_number
from ..registry import register


@dataclass
class WReinfConfig(AlgorithmConfig):
    """``positive_weight``: λ, the weight of positive samples (negative samples keep weight 1)."""

    positive_weight: float

    def validate(self) -> None:
        super().validate()
        check_number(self, "positive_weight", 0.0)


@register("w_reinf")
class WReinf(Algorithm):
    """W-REINF (arXiv 2506.01347): L = (1/N) Σ_{i,t} w_i · l_{i,t}
    with Â_i = r_i (±1 rewards), w_i = λ if Â_i > 0 else 1 (λ = 0.1).

    The paper's objective is L_W-REINF = λ·L_PSR + L_NSR: PSR (r = +1) is REINFORCE on correct samples,
    NSR (r = −1) on wrong ones, so the positive samples carry weight λ and the negative ones 1. With
    Â = r ∈ {+1, −1} that is exactly w_i·Â_i; with 0/1 rewards NSR vanishes, hence
    ``requires_signed_rewards``. l is the clipped surrogate, whose gradient at ρ = 1 is REINFORCE's
    −Â ∇log π (the authors' verl code also runs the PPO clipped loss, token-mean, on Â = +λ / −1).
    """

    Config = WReinfConfig
    requires_signed_rewards = True

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        lam = torch.full_like(advantages, self.config.positive_weight)
        return torch.where(advantages > 0, lam, torch.ones_like(advantages))
