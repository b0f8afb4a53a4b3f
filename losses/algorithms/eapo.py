"""EAPO and its "without quadrant Q" ablations (arXiv 2604.11056)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_bool, check_number, check_subset, fail
from ..entropy_credit import entropy_aware_advantages
from ..quadrants import QUADRANTS, quadrant_masks, union_mask
from ..registry import register


@dataclass
class EAPOConfig(AlgorithmConfig):
    """EAPO keys: alpha (α), phi (φ), without_quadrants (ablation: quadrants that keep the plain Â)."""

    alpha: float
    phi: float
    without_quadrants: tuple
    reverse_entropy: bool

    def validate(self) -> None:
        super().validate()
        check_number(self, "alpha", 0.0)
        check_number(self, "phi", 0.0, lo_open=True)
        if self.alpha / self.phi >= 1.0:
            fail("alpha", f"alpha/phi = {self.alpha / self.phi} must be < 1 or the credit can flip a sign")
        check_subset(self, "without_quadrants", QUADRANTS)
        check_bool(self, "reverse_entropy")


@register("eapo")
@register("eapo_strong")
@register("eapo_mid")
@register("eapo_reversed")
@register("eapo_wo_phr")
@register("eapo_wo_plr")
@register("eapo_wo_nlr")
@register("eapo_wo_nhr")
class EAPO(Algorithm):
    """EAPO (arXiv 2604.11056): Â^CA = Â + α·sign(Â)·sg[clip((H − μ_H)/σ_H, ±|Â|/φ)] in the DAPO objective.

    Built on DAPO, its data side included (dynamic sampling, overlong shaping: configs/algorithm/eapo.yaml
    composes dapo.yaml).
    μ_H, σ_H: group statistics of old-policy entropy over all response tokens. Tokens of the quadrants
    in ``without_quadrants`` keep the plain Â (the paper's "w/o Q" ablation). Tokens with Â = 0 are in no
    quadrant and need no special case: Â^CA = Â = 0 there either way (sign(0) = 0). ``reverse_entropy``
    (the eapo_reversed control arm) scores −H instead of H: the same weight range, credit on low-entropy tokens.
    """

    Config = EAPOConfig

    def shape_advantages(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        c = self.config
        scored = -entropy if c.reverse_entropy else entropy
        shaped = entropy_aware_advantages(advantages, scored, mask, group_ids, c.alpha, c.phi)
        if not c.without_quadrants:
            return shaped
        plain = union_mask(quadrant_masks(advantages, entropy, mask, group_ids), c.without_quadrants)
        return torch.where(plain, advantages, shaped)
