"""Forking tokens / "80-20" (Wang et al., arXiv 2506.01939)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import Algorithm
from ..config import AlgorithmConfig, check_number
from ..registry import register


@dataclass
class ForkingConfig(AlgorithmConfig):
    """``top_ratio``: ρ, the fraction of the batch's response tokens (highest entropy) that keep gradient."""

    top_ratio: float = 0.2

    def validate(self) -> None:
        super().validate()
        check_number(self, "top_ratio", 0.0, 1.0, lo_open=True)


def top_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool [B, T]: the ⌈ρ·N⌉ response tokens of the whole batch with the highest entropy (ties by index)."""
    n = int(mask.sum())
    out = torch.zeros_like(mask)
    if n == 0:
        return out
    k = min(n, max(1, math.ceil(ratio * n)))
    key = torch.where(mask, entropy.nan_to_num(nan=-torch.inf), torch.full_like(entropy, -torch.inf))
    out.view(-1)[torch.topk(key.reshape(-1), k).indices] = True
    return out & mask


@register("forking")
class Forking(Algorithm):
    """Forking tokens (arXiv 2506.01939): DAPO loss restricted to high-entropy tokens:
    L = (1/N) Σ_{i,t} 1[H_{i,t} ≥ top-ρ quantile of the batch] · l_{i,t}.

    The batch is the mini-batch given to ``shape_credit``; the normaliser still counts all tokens.
    """

    Config = ForkingConfig

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        return top_entropy_mask(entropy, mask, self.config.top_ratio).to(advantages.dtype)
