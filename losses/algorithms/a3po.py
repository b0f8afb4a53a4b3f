"""A3PO (arXiv 2512.21625): polarity weights plus per-response rank-based token scaling."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_choice, check_number
from ..registry import register


@dataclass
class A3POConfig(AlgorithmConfig):
    """``pos_weight``/``neg_weight``: polarity weights; ``rank_by``: "prob" (old π) or "entropy";
    the top ``top_fraction`` tokens of each response by that key are scaled by ``top_scale``, the bottom
    ``bottom_fraction`` by ``bottom_scale``."""

    pos_weight: float = 1.0
    neg_weight: float = 1.0
    rank_by: str = "entropy"
    top_fraction: float = 0.2
    top_scale: float = 1.5
    bottom_fraction: float = 0.2
    bottom_scale: float = 0.5

    def validate(self) -> None:
        super().validate()
        for f in ("pos_weight", "neg_weight", "top_scale", "bottom_scale"):
            check_number(self, f, 0.0)
        check_number(self, "top_fraction", 0.0, 1.0)
        check_number(self, "bottom_fraction", 0.0, 1.0)
        check_choice(self, "rank_by", ("prob", "entropy"))


def response_ranks(key: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Long [B, T]: 0-based descending rank of each response token's key within its row (stable)."""
    k = torch.where(mask, key.nan_to_num(nan=-torch.inf, neginf=-1e30), torch.full_like(key, -torch.inf))
    order = torch.argsort(k, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(k.shape[-1], device=k.device).expand_as(order).contiguous())
    return ranks


def rank_scales(key, mask, top_fraction, top_scale, bottom_fraction, bottom_scale) -> torch.Tensor:
    """[B, T] factor: top_scale on the ⌊f_top·n_i⌋ highest-key tokens of row i, bottom_scale on the
    ⌊f_bot·n_i⌋ lowest, product of both where they overlap, 1 elsewhere."""
    n = mask.sum(-1, keepdim=True)
    ranks = response_ranks(key, mask)
    n_top = torch.floor(n * top_fraction + 1e-9).long()
    n_bot = torch.floor(n * bottom_fraction + 1e-9).long()
    one = torch.ones_like(key)
    scale = torch.where(mask & (ranks < n_top), one * top_scale, one)
    return scale * torch.where(mask & (ranks >= n - n_bot), one * bottom_scale, one)


@register("a3po")
class A3PO(Algorithm):
    """w_{i,t} = (pos_weight if Â ≥ 0 else neg_weight) · rank scale of token t within response i, by old
    probability exp(log π_old) or old entropy. L = (1/N) Σ w·l (our reading of arXiv 2512.21625; the
    defaults are placeholders to be checked against the paper)."""

    Config = A3POConfig

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        c = self.config
        key = old_logprobs if c.rank_by == "prob" else entropy  # exp is monotone: rank by log-prob
        polarity = torch.where(advantages >= 0, torch.full_like(advantages, c.pos_weight),
                               torch.full_like(advantages, c.neg_weight))
        return polarity * rank_scales(key.to(advantages.dtype), mask, c.top_fraction, c.top_scale,
                                      c.bottom_fraction, c.bottom_scale)
