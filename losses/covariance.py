"""Clip-Cov and KL-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

Per-token centred covariance between advantage and current log-prob:
    Cov_{i,t} = (Â_{i,t} − mean Â) · (log π_θ(o_{i,t}) − mean log π_θ)
The means run over the response tokens of the MICRO-BATCH handed to ``policy_loss`` (as in the
reference verl implementation, which computes them per micro-batch). Consequence, documented:
these two losses are NOT split-invariant — the selected tokens depend on the micro-batch.
"""
from __future__ import annotations

import torch


def token_covariance(advantages: torch.Tensor, logprobs: torch.Tensor, response_mask: torch.Tensor):
    """Cov [b, T] (detached); −inf on padding so that it is never selected."""
    m = response_mask.bool()
    a, lp = advantages.detach(), logprobs.detach()
    n = m.sum().clamp_min(1)
    a_mean = torch.where(m, a, torch.zeros_like(a)).sum() / n
    lp_mean = torch.where(m, lp, torch.zeros_like(lp)).sum() / n
    cov = (a - a_mean) * (lp - lp_mean)
    return torch.where(m, cov, torch.full_like(cov, -torch.inf))


def kl_cov_selection(cov: torch.Tensor, response_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool [b, T]: the top ``max(1, ⌊ratio·N⌋)`` response tokens by covariance (none if N = 0)."""
    m = response_mask.bool()
    n = int(m.sum())
    sel = torch.zeros_like(m)
    if n == 0:
        return sel
    k = max(1, int(n * ratio))
    idx = torch.topk(cov.reshape(-1), k).indices
    sel.view(-1)[idx] = True
    return sel & m


def clip_cov_selection(cov: torch.Tensor, eligible: torch.Tensor, ratio: float, lower: float, upper: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool [b, T]: a random ``max(1, ⌊ratio·N⌋)`` subset of eligible tokens with lower < Cov < upper.

    ``eligible`` [b, T] bool: response tokens not already clipped by the PPO surrogate.
    """
    n = int(eligible.sum())
    cand = torch.nonzero((eligible & (cov > lower) & (cov < upper)).reshape(-1)).squeeze(-1)
    sel = torch.zeros_like(eligible)
    if n == 0 or cand.numel() == 0:
        return sel
    k = min(max(1, int(n * ratio)), cand.numel())
    perm = torch.randperm(cand.numel(), generator=generator)[:k].to(cand.device)
    sel.view(-1)[cand[perm]] = True
    return sel
