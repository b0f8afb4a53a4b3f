"""Truncated importance sampling (TIS) for rollouts sampled by a policy other than π_old.

The rollout engine samples o_t ~ μ (the behaviour policy: weights ``staleness`` updates old, and the
engine's own numerics, top-p truncation included), while the PPO ratio ρ = π_θ/π_old assumes samples
from π_old. The token-level correction multiplies each token's policy-gradient loss by

    w_t = min( π_old(o_t | s_t) / μ(o_t | s_t), C ),     detached (no gradient through w)

(Ionides 2008 truncated IS; as verl's rollout correction ``token`` TIS, OpenRLHF's
``--enable_vllm_is_correction`` and TRL's ``vllm_importance_sampling_correction``; Yao et al. 2025,
"Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"). μ(o_t|s_t) must be the
probability under which o_t was actually drawn: with top-p < 1 that is the renormalised truncated
distribution, which the engine reports (vLLM ``logprobs_mode="processed_logprobs"``).
"""
from __future__ import annotations

import torch


def truncated_is_weights(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, response_mask: torch.Tensor,
                         cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """(w [B, T], metrics): w_t = min(exp(log π_old − log μ), cap) on response tokens, 0 elsewhere.

    old_logprobs, behaviour_logprobs [B, T] float; response_mask [B, T] bool/0-1; cap C > 0.
    Metrics over response tokens: ``is/ratio_mean`` (mean of the untruncated ratio) and
    ``is/clipped_share`` (share of tokens whose ratio exceeded C). The log-ratio is clamped at ±20
    before exp so a token μ deemed impossible cannot overflow.
    """
    if not cap > 0:
        raise ValueError(f"is_cap: must be > 0, got {cap}")
    m = response_mask.bool()
    log_ratio = (old_logprobs.detach().double() - behaviour_logprobs.detach().double()).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    weights = torch.where(m, ratio.clamp(max=cap), torch.zeros_like(ratio)).to(old_logprobs.dtype)
    n = int(m.sum())
    metrics = {"is/ratio_mean": float(ratio[m].mean()) if n else 1.0,
               "is/clipped_share": float((ratio[m] > cap).double().mean()) if n else 0.0}
    return weights, metrics
