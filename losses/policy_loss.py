"""Per-token policy-gradient surrogates (before token weights and aggregation).

All functions take logprobs [b, T] (current policy, with grad), old_logprobs [b, T], advantages
[b, T] (shaped credit) and response_mask [b, T]; they return the per-token loss [b, T] (garbage-free
on padding) and a bool [b, T] "clipped" indicator for the clip_fraction metric.
"""
from __future__ import annotations

import torch

LOG_RATIO_CLAMP = 20.0


def token_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    """log ρ_{i,t} = log π_θ − log π_old, clamped to ±20 so exp() never overflows."""
    return (logprobs - old_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, response_mask: torch.Tensor):
    """GSPO-token (Zheng et al., arXiv 2507.18071) log-ratio [b, T]:

        log s_{i,t} = sg[ (1/|o_i|) Σ_t log ρ_{i,t} ] + log π_θ(o_{i,t}) − sg[log π_θ(o_{i,t})]
    Its value is the sequence ratio s_i = exp(mean_t log ρ_{i,t}) on every token of response i; with
    seq-mean-token-mean aggregation its gradient equals GSPO's sequence-level gradient.
    """
    m = response_mask.bool()
    log_r = torch.where(m, token_log_ratio(logprobs, old_logprobs), torch.zeros_like(logprobs))
    seq = log_r.sum(-1) / m.sum(-1).clamp_min(1).to(logprobs.dtype)
    return (seq.detach()[:, None] + logprobs - logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float,
                      dual_clip: float | None = None):
    """PPO clipped surrogate (arXiv 1707.06347) with clip-higher (DAPO, arXiv 2503.14476) and dual-clip
    (Ye et al., arXiv 1912.09729):

        l = max(−Â ρ, −Â clip(ρ, 1−ε_low, 1+ε_high));   if Â < 0 and c is set: l = min(l, −c Â)
    log_ratio [b, T] (token or GSPO sequence ratio), advantages [b, T] -> (l [b, T], clipped bool [b, T]).
    """
    adv = advantages.detach()
    ratio = torch.exp(log_ratio)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    clipped = loss_clipped > loss_unclipped
    if dual_clip is not None:
        capped = torch.minimum(loss, -dual_clip * adv)
        clipped = clipped | ((adv < 0) & (loss > capped))
        loss = torch.where(adv < 0, capped, loss)
    return loss, clipped


def masked_mean_value(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Python float mean of ``values`` over ``mask`` (0.0 if empty); for metrics only."""
    m = mask.bool()
    n = int(m.sum())
    return float(values.detach()[m].double().sum() / n) if n else 0.0


def approx_kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(π_old ‖ π_θ) per token from log ρ: (ρ − 1) − log ρ (for the approx_kl metric)."""
    return torch.expm1(log_ratio.detach()) - log_ratio.detach()
