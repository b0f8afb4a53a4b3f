"""EAPO — Entropy-Aware Policy Optimization (arXiv 2604.11056; later renamed HAPO). See ALGORITHM.md.

Per group g (all response tokens of the G responses of one prompt, padding excluded):
    μ_H, σ_H = mean and POPULATION std of the old-policy entropy H_{i,t}
    Â^H_{i,t} = clip((H_{i,t} − μ_H) / σ_H, −|Â_{i,t}|/φ, +|Â_{i,t}|/φ)      (0 when σ_H < 1e-8)
    Â^CA_{i,t} = Â_{i,t} + α · sign(Â_{i,t}) · stopgrad(Â^H_{i,t})
Equivalent to a per-token weight Â^CA/Â ∈ [1 − α/φ, 1 + α/φ]; sign never flips for α/φ < 1.
"""
from __future__ import annotations

import torch

from .group_stats import STD_FLOOR, group_token_mean_std


def entropy_credit_score(advantages: torch.Tensor, entropy: torch.Tensor, response_mask: torch.Tensor,
                         group_ids: torch.Tensor, phi: float = 2.0) -> torch.Tensor:
    """Â^H [B, T]: group-standardised entropy, dual-clipped at ±|Â|/φ; 0 on padding; no grad."""
    h = entropy.detach()
    adv = advantages.detach()
    mean, std = group_token_mean_std(h, response_mask, group_ids)
    ok = (std >= STD_FLOOR)[:, None] & response_mask.bool()
    z = torch.where(ok, (h - mean[:, None]) / std.clamp_min(STD_FLOOR)[:, None], torch.zeros_like(h))
    bound = adv.abs() / phi
    return torch.maximum(torch.minimum(z, bound), -bound).to(adv.dtype)


def entropy_aware_advantages(advantages, entropy, response_mask, group_ids, alpha=0.2, phi=2.0):
    """Â^CA [B, T] = Â + α·sign(Â)·Â^H (EAPO). Padding tokens keep Â unchanged.

    advantages [B, T] float, entropy [B, T] float (old policy; detached), response_mask [B, T]
    bool or 0/1, group_ids [B] int. Returns a tensor with no graph to ``entropy``.
    """
    score = entropy_credit_score(advantages, entropy, response_mask, group_ids, phi)
    return advantages + alpha * torch.sign(advantages.detach()) * score
