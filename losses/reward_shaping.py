"""DAPO overlong reward shaping (Yu et al., arXiv 2503.14476, "soft overlong punishment")."""
from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache_length: int) -> torch.Tensor:
    """Length penalty [B] added to the reward, from response lengths [B]:

        0                                   if |y| ≤ L_max − L_cache
        ((L_max − L_cache) − |y|) / L_cache if L_max − L_cache < |y| ≤ L_max
        −1                                  if |y| > L_max
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(f"cache_length: must be in (0, max_length], got {cache_length}")
    y = lengths.to(torch.float64)
    soft = max_length - cache_length
    pen = torch.where(y > soft, (soft - y) / cache_length, torch.zeros_like(y))
    return torch.where(y > max_length, torch.full_like(y, -1.0), pen).to(torch.float32)
