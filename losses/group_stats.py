"""Masked per-group statistics over all response tokens of the responses that share a group id."""
from __future__ import annotations

import torch

# Below this, a group's entropy standard deviation counts as zero (ALGORITHM.md convention).
STD_FLOOR = 1e-8


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index [B] in 0..G-1 for arbitrary integer ``group_ids`` [B], and G."""
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(uniq.numel())


def group_token_mean_std(values: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor):
    """Per-row (broadcast) mean and POPULATION std of ``values`` over the group's response tokens.

    values [B, T] float, mask [B, T] bool/0-1, group_ids [B] int -> (mean [B], std [B]).
    μ_g = Σ_{i∈g,t} m·v / Σ m ;  σ_g = sqrt(Σ m·(v − μ_g)² / Σ m)  (two-pass, no gradient).
    Groups without any response token get μ = 0, σ = 0. Padding values (even NaN/inf) are ignored.
    """
    values = values.detach()
    m = mask.bool()
    idx, n_groups = group_index(group_ids)
    v = torch.where(m, values, torch.zeros((), dtype=values.dtype, device=values.device))
    count = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    count.index_add_(0, idx, m.sum(-1).to(values.dtype))
    total = torch.zeros_like(count).index_add_(0, idx, v.sum(-1))
    mean_g = total / count.clamp_min(1)
    dev = torch.where(m, values - mean_g[idx][:, None], torch.zeros((), dtype=values.dtype, device=values.device))
    sq = torch.zeros_like(count).index_add_(0, idx, dev.pow(2).sum(-1))
    std_g = (sq / count.clamp_min(1)).sqrt()
    return mean_g[idx], std_g[idx]


def group_reward_mean_std(rewards: torch.Tensor, group_ids: torch.Tensor):
    """Per-response mean, UNBIASED std (0 for single-response groups) and size of its group.

    rewards [B] float, group_ids [B] int -> (mean [B], std [B], size [B]).
    """
    idx, n_groups = group_index(group_ids)
    r = rewards.to(torch.float64)
    size = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, idx, torch.ones_like(r))
    mean_g = torch.zeros_like(size).index_add_(0, idx, r) / size
    sq = torch.zeros_like(size).index_add_(0, idx, (r - mean_g[idx]).pow(2))
    std_g = torch.where(size > 1, (sq / (size - 1).clamp_min(1)).sqrt(), torch.zeros_like(size))
    return mean_g[idx], std_g[idx], size[idx]
