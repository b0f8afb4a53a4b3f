"""The Four-Quadrant Decomposition (arXiv 2604.11056): polarity × entropy-relative-to-group-mean.

PHR: Â > 0, H ≥ μ_H   PLR: Â > 0, H < μ_H   NLR: Â < 0, H < μ_H   NHR: Â < 0, H ≥ μ_H
Polarity is the sign of the advantage (ALGORITHM.md). Tokens with Â = 0 (groups whose G rewards are all
equal) carry no signal and belong to NO quadrant; ``quadrant_diagnostics`` reports their share as
``quadrant/zero/token_share``. μ_H is the mean old-policy entropy over all response tokens of the token's
group (zero-advantage tokens included). When the group's entropy std is below 1e-8 every token equals
the mean (up to rounding) and counts as high entropy.
"""
from __future__ import annotations

import torch

from .group_stats import STD_FLOOR, group_token_mean_std

QUADRANTS = ("PHR", "PLR", "NLR", "NHR")


def quadrant_masks(advantages, entropy, response_mask, group_ids) -> dict[str, torch.Tensor]:
    """Bool [B, T] masks keyed "PHR", "PLR", "NLR", "NHR"; padding and Â = 0 tokens are False in all four.

    advantages [B, T] float, entropy [B, T] float, response_mask [B, T] bool/0-1, group_ids [B] int.
    """
    m = response_mask.bool()
    h = entropy.detach()
    mean, std = group_token_mean_std(h, m, group_ids)
    high = (h >= mean[:, None]) | (std < STD_FLOOR)[:, None]
    a = advantages.detach()
    pos, neg = m & (a > 0), m & (a < 0)
    return {"PHR": pos & high, "PLR": pos & ~high, "NLR": neg & ~high, "NHR": neg & high}


def union_mask(masks: dict[str, torch.Tensor], names) -> torch.Tensor:
    """Bool [B, T]: OR of ``masks[q]`` for q in ``names`` (all False if ``names`` is empty)."""
    out = torch.zeros_like(next(iter(masks.values())))
    for q in names:
        out = out | masks[q]
    return out


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    return float(num / den) if float(den) > 0 else 0.0


def quadrant_diagnostics(advantages, shaped_signal, entropy, response_mask, group_ids) -> dict[str, float]:
    """Per-quadrant statistics for logging (floats, 0.0 for empty quadrants; never NaN).

    advantages [B, T] plain Â; shaped_signal [B, T] = Â_shaped · token_weight (what the policy
    gradient is multiplied by); entropy [B, T]. With N≠0 the response tokens with Â ≠ 0 (the union of
    the quadrants) and N the response tokens, for each quadrant Q:
      token_share  = |Q| / N≠0                    entropy_mean = mean_{Q} H
      adv_abs_mean = mean_{Q} |Â|                 adv_mass_share = Σ_Q |Â_shaped·w| / Σ_{Â≠0} |Â_shaped·w|
    so the four token shares (and advantage-mass shares) sum to 1 when N≠0 > 0, else all are 0; plus
      quadrant/zero/token_share = (N − N≠0) / N   (tokens in no quadrant; 0 when N = 0).
    """
    masks = quadrant_masks(advantages, entropy, response_mask, group_ids)
    m = response_mask.bool()
    signed = union_mask(masks, QUADRANTS)
    f64 = dict(dtype=torch.float64)
    h, a, s = entropy.detach().to(**f64), advantages.detach().abs().to(**f64), shaped_signal.detach().abs().to(**f64)
    n_all, n_signed, total_signal = m.sum().to(**f64), signed.sum().to(**f64), s[signed].sum()
    out: dict[str, float] = {}
    for q, qm in masks.items():
        n = qm.sum().to(**f64)
        out[f"quadrant/{q}/token_share"] = _safe_ratio(n, n_signed)
        out[f"quadrant/{q}/entropy_mean"] = _safe_ratio(h[qm].sum(), n)
        out[f"quadrant/{q}/adv_abs_mean"] = _safe_ratio(a[qm].sum(), n)
        out[f"quadrant/{q}/adv_mass_share"] = _safe_ratio(s[qm].sum(), total_signal)
    out["quadrant/zero/token_share"] = _safe_ratio(n_all - n_signed, n_all)
    return out
