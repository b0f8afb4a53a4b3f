"""KL-Cov and Clip-Cov (Cui et al., arXiv 2505.22617). Covariance statistics are taken over the
micro-batch given to ``policy_loss`` (see ``losses.covariance``); these losses are not split-invariant."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_number
from ..covariance import clip_cov_selection, kl_cov_selection, token_covariance
from ..policy_loss import clipped_surrogate, token_log_ratio
from ..registry import register


@dataclass
class KLCovConfig(AlgorithmConfig):
    """``kl_cov_ratio``: fraction k of tokens (top covariance) penalised; ``kl_cov_coef``: penalty β."""

    kl_cov_ratio: float
    kl_cov_coef: float

    def validate(self) -> None:
        super().validate()
        check_number(self, "kl_cov_ratio", 0.0, 1.0)
        check_number(self, "kl_cov_coef", 0.0)


@register("kl_cov")
class KLCov(Algorithm):
    """KL-Cov (arXiv 2505.22617): l = −Âρ, plus β·|log π_θ − log π_old|
    on the top-k fraction of tokens by Cov (no ratio clip)."""

    Config = KLCovConfig

    def pg_token_loss(self, logprobs, old_logprobs, credit, response_mask):
        c = self.config
        log_r = token_log_ratio(logprobs, old_logprobs)
        loss = -credit.advantages * torch.exp(log_r)
        sel = kl_cov_selection(token_covariance(credit.advantages, logprobs, response_mask), response_mask,
                               c.kl_cov_ratio) if c.kl_cov_ratio > 0 else torch.zeros_like(response_mask)
        loss = loss + torch.where(sel, c.kl_cov_coef * log_r.abs(), torch.zeros_like(loss))
        extra = {"cov_selected_fraction": float(sel.sum()) / max(int(response_mask.sum()), 1)}
        return loss, torch.zeros_like(response_mask), extra


@dataclass
class ClipCovConfig(AlgorithmConfig):
    """``clip_cov_ratio``: fraction of tokens detached; ``clip_cov_lb``/``ub``: Cov window; ``seed``: RNG."""

    clip_cov_ratio: float
    clip_cov_lb: float
    clip_cov_ub: float
    seed: int

    def validate(self) -> None:
        super().validate()
        check_number(self, "clip_cov_ratio", 0.0, 1.0)
        check_number(self, "clip_cov_lb")
        check_number(self, "clip_cov_ub", self.clip_cov_lb)
        check_number(self, "seed", integer=True)


@register("clip_cov")
class ClipCov(Algorithm):
    """Clip-Cov (arXiv 2505.22617): clipped surrogate, but a random ``clip_cov_ratio`` fraction of the unclipped tokens
    with lb < Cov < ub get zero loss and gradient."""

    Config = ClipCovConfig

    def __init__(self, config):
        super().__init__(config)
        self.generator = torch.Generator().manual_seed(config.seed)

    def pg_token_loss(self, logprobs, old_logprobs, credit, response_mask):
        c = self.config
        loss, clipped = clipped_surrogate(token_log_ratio(logprobs, old_logprobs), credit.advantages,
                                          c.clip_low, c.clip_high, c.dual_clip)
        cov = token_covariance(credit.advantages, logprobs, response_mask)
        sel = clip_cov_selection(cov, response_mask & ~clipped, c.clip_cov_ratio, c.clip_cov_lb, c.clip_cov_ub,
                                 self.generator) if c.clip_cov_ratio > 0 else torch.zeros_like(response_mask)
        extra = {"cov_selected_fraction": float(sel.sum()) / max(int(response_mask.sum()), 1)}
        return torch.where(sel, torch.zeros_like(loss), loss), clipped, extra
