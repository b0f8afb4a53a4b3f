"""Quadrant-isolation training (arXiv 2604.11056): learn only from the chosen quadrants."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_subset, fail
from ..quadrants import QUADRANTS, quadrant_masks, union_mask
from ..registry import register


@dataclass
class QuadrantConfig(AlgorithmConfig):
    """``quadrants``: non-empty subset of PHR, PLR, NLR, NHR that receive gradient."""

    quadrants: tuple

    def validate(self) -> None:
        super().validate()
        check_subset(self, "quadrants", QUADRANTS)
        if not self.quadrants:
            fail("quadrants", "must name at least one quadrant")


@register("quadrant")
@register("quadrant_phr")
@register("quadrant_plr")
@register("quadrant_nlr")
@register("quadrant_nhr")
class QuadrantIsolation(Algorithm):
    """Quadrant isolation (arXiv 2604.11056): DAPO loss × 1[token ∈ ∪ quadrants];
    the normaliser still counts every response token.

    L = (1/N) Σ_{i,t} 1[(i,t) ∈ Q] · max(−Âρ, −Â clip(ρ, 1−ε_low, 1+ε_high)).
    Tokens with Â = 0 are in no quadrant (weight 0); their surrogate is 0 anyway.
    """

    Config = QuadrantConfig

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        masks = quadrant_masks(advantages, entropy, mask, group_ids)
        return union_mask(masks, self.config.quadrants).to(advantages.dtype)
