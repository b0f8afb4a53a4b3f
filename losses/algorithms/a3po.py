"""A3PO (Tang et al., "Rethinking Sample Polarity in RLVR", arXiv 2512.21625): adaptive and asymmetric
token-level advantage shaping.

Per response i with polarity P_i = sign(Â_i) (positive: Â > 0, negative: Â < 0) and n_i response tokens,
the tokens are ranked by a key of the OLD policy (probability π_old(o_{i,t}) or entropy H_{i,t}):
    high_i = the k_high tokens with the largest key,  low_i = the k_low tokens with the smallest key,
    k = max(1, ⌊f·n_i⌋) for a fraction f > 0 (no token for f = 0)       [ties: earlier position first]
    w_{i,t} = c_P · s_{P,high}(p)^{1[t ∈ high_i]} · s_{P,low}(p)^{1[t ∈ low_i]}      (w = 1 where Â = 0)
with polarity weights c_+ / c_− and one (fraction, scale) pair per polarity × {high, low}; a token in both
sets gets both factors. The scales decay towards 1 with training progress p = step / total_steps
(``Algorithm.begin_step``):  s(p) = 1 + (s − 1)·d(p),  d(p) = max(0, 1 − p / decay_end)  ("linear"),
d = 1 ("none"). Scaling Â by w > 0 equals weighting the clipped surrogate by w, so w is a token weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_choice, check_number
from ..registry import register

SCALE_PAIRS = ("pos_high", "pos_low", "neg_high", "neg_low")
DECAYS = ("linear", "none")


@dataclass
class A3POConfig(AlgorithmConfig):
    """A3PO keys (see configs/algorithm/a3po.yaml): polarity weights, ``rank_by``, a (fraction, scale)
    pair per polarity × high/low key, and the decay of the scales over training."""

    pos_weight: float
    neg_weight: float
    rank_by: str
    pos_high_fraction: float
    pos_high_scale: float
    pos_low_fraction: float
    pos_low_scale: float
    neg_high_fraction: float
    neg_high_scale: float
    neg_low_fraction: float
    neg_low_scale: float
    scale_decay: str
    decay_end: float

    def validate(self) -> None:
        super().validate()
        check_number(self, "pos_weight", 0.0)
        check_number(self, "neg_weight", 0.0)
        check_choice(self, "rank_by", ("prob", "entropy"))
        for pair in SCALE_PAIRS:
            check_number(self, f"{pair}_fraction", 0.0, 1.0)
            check_number(self, f"{pair}_scale", 0.0)
        check_choice(self, "scale_decay", DECAYS)
        check_number(self, "decay_end", 0.0, lo_open=True)


def decay_factor(progress: float, kind: str, decay_end: float) -> float:
    """d(p) ∈ [0, 1]: 1 − p/decay_end clipped at 0 ("linear"), or 1 ("none"); p = step / total_steps."""
    return 1.0 if kind == "none" else max(0.0, 1.0 - progress / decay_end)


def response_ranks(key: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Long [B, T]: 0-based rank of each token of row i by descending key, ties by position (earlier
    first); the row's n_i response tokens hold ranks 0..n_i−1 (NaN keys rank last), padding comes after."""
    k = torch.where(mask, key.nan_to_num(nan=-torch.inf), torch.full_like(key, -torch.inf))
    order = torch.argsort(k, dim=-1, descending=True, stable=True)
    padding_last = torch.argsort((~mask).gather(1, order).to(torch.int8), dim=-1, stable=True)
    order = order.gather(1, padding_last)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(k.shape[-1], device=k.device).expand_as(order).contiguous())
    return ranks


def selection_count(n: torch.Tensor, fraction: float) -> torch.Tensor:
    """Long [B, 1]: k = max(1, ⌊fraction·n⌋) for rows with n ≥ 1 response tokens and fraction > 0, else 0."""
    if fraction <= 0:
        return torch.zeros_like(n)
    k = torch.floor(n.to(torch.float64) * fraction + 1e-9).long().clamp_min(1)
    return torch.minimum(k, n)


def rank_scales(ranks, mask, n, high: tuple[float, float], low: tuple[float, float]) -> torch.Tensor:
    """[B, T] float64 factor: s_high on the top-k_high ranks, s_low on the bottom-k_low ranks of each
    row (their product where the sets overlap), 1 elsewhere. high/low = (fraction, scale)."""
    one = torch.ones(ranks.shape, dtype=torch.float64, device=ranks.device)
    in_high = mask & (ranks < selection_count(n, high[0]))
    in_low = mask & (ranks >= n - selection_count(n, low[0]))
    return torch.where(in_high, one * high[1], one) * torch.where(in_low, one * low[1], one)


@register("a3po")
class A3PO(Algorithm):
    """A3PO (arXiv 2512.21625): DAPO loss with token weights w_{i,t} = c_P · Π s_{P,·}(p) on the top /
    bottom fraction of each response ranked by old probability or entropy (module docstring).
    Defaults: ×2 on the 20% lowest-probability tokens of positive samples and on the 20% highest-
    probability tokens of negative samples, decaying linearly to plain DAPO (w = 1) at the end of
    training. The direction is A3PO's (README of github.com/txy77/Sample-Polarity-of-RLVR), 20% / ×2 the
    values of that repository's run scripts; its code has no decay, so the linear schedule is our reading.
    """

    Config = A3POConfig

    def __init__(self, config):
        super().__init__(config)
        self.progress = 0.0

    def begin_step(self, step: int, total_steps: int) -> None:
        """Set p = step / total_steps (clipped to [0, 1]) for the decay of the token scales."""
        if total_steps < 1 or step < 0:
            raise ValueError(f"begin_step: need step >= 0 and total_steps >= 1, got {step}, {total_steps}")
        self.progress = min(1.0, step / total_steps)

    def current_scales(self) -> dict[str, float]:
        """{"pos_high": s, ...}: each configured scale after decay at the current progress."""
        c = self.config
        d = decay_factor(self.progress, c.scale_decay, c.decay_end)
        return {pair: 1.0 + (getattr(c, f"{pair}_scale") - 1.0) * d for pair in SCALE_PAIRS}

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        c, s = self.config, self.current_scales()
        key = old_logprobs if c.rank_by == "prob" else entropy  # exp is monotone: rank by log-prob
        ranks, n = response_ranks(key, mask), mask.sum(-1, keepdim=True)
        pos = c.pos_weight * rank_scales(ranks, mask, n, (c.pos_high_fraction, s["pos_high"]),
                                         (c.pos_low_fraction, s["pos_low"]))
        neg = c.neg_weight * rank_scales(ranks, mask, n, (c.neg_high_fraction, s["neg_high"]),
                                         (c.neg_low_fraction, s["neg_low"]))
        one = torch.ones_like(pos)
        return torch.where(advantages > 0, pos, torch.where(advantages < 0, neg, one)).to(advantages.dtype)
