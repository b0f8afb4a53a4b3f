"""Per-token KL(π_θ ‖ π_ref) estimators from log-probs (Schulman, "Approximating KL divergence", 2020).

With log r = log π_ref − log π_θ (tokens sampled from π_θ):
    k1 = −log r      k2 = ½ (log r)²      k3 = (r − 1) − log r   (non-negative, unbiased)
"""
from __future__ import annotations

from typing import Callable

import torch

from core.registry import Registry

KL: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("KL estimator", key="kl_estimator")
KL.add("k1", lambda log_r: -log_r)
KL.add("k2", lambda log_r: 0.5 * log_r.pow(2))
KL.add("k3", lambda log_r: torch.expm1(log_r) - log_r)
KL_ESTIMATORS = tuple(KL.names())


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL estimate [b, T]; logprobs (with grad) and ref_logprobs [b, T]; log r clamped to ±20."""
    fn = KL.get(estimator)
    log_r = (ref_logprobs.detach() - logprobs).clamp(-20.0, 20.0)
    return fn(log_r)
