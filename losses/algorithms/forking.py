"""Forking tokens / "80-20" (Wang et al., "Beyond the 80/20 Rule", arXiv 2506.01939).

The policy gradient is kept only on the ⌈ρ·N⌉ highest-entropy response tokens of the batch (ρ = 0.2).
"The batch" here is the GLOBAL mini-batch: with ``torch.distributed`` initialised and world size > 1
the response-token entropies of every rank are all-gathered, so the selection (and its threshold) is
the one over the concatenation of all ranks' mini-batches, identical on every rank and independent
of how the batch is split. Ties at the threshold are broken by position in that concatenation (rank
0's rows first, then row-major within a rank), earlier first. NaN entropies rank lowest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..base import Algorithm
from ..config import AlgorithmConfig, check_number
from ..registry import register


@dataclass
class ForkingConfig(AlgorithmConfig):
    """``top_ratio``: ρ, the fraction of the batch's response tokens (highest entropy) that keep gradient."""

    top_ratio: float

    def validate(self) -> None:
        super().validate()
        check_number(self, "top_ratio", 0.0, 1.0, lo_open=True)


def _distributed(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def gather_values(values: torch.Tensor, group=None) -> tuple[torch.Tensor, int]:
    """All-gather the 1-D ``values`` [n_r] of every rank (sizes may differ) -> ([Σ n_r], offset of this
    rank's values in the concatenation). A collective: every rank of ``group`` must call it."""
    if not _distributed(group):
        return values, 0
    world = dist.get_world_size(group)
    size = torch.tensor([values.numel()], dtype=torch.long, device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s) for s in sizes]
    if max(counts) == 0:  # no response token on any rank
        return values, 0
    padded = torch.zeros(max(counts), dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]), sum(counts[:dist.get_rank(group)])


def top_count(n: int, ratio: float) -> int:
    """k = min(n, max(1, ⌈ρ·n⌉)) for n ≥ 1, 0 for n = 0; ⌈·⌉ tolerates 1e-9 (0.2·15 is 3, not 4)."""
    return min(n, max(1, math.ceil(ratio * n - 1e-9))) if n else 0


def top_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, ratio: float, group=None) -> torch.Tensor:
    """Bool [B, T]: this rank's share of the ⌈ρ·N⌉ highest-entropy response tokens of the global batch.

    entropy [B, T] float, mask [B, T] bool. N counts the response tokens of all ranks of ``group``
    (default: the world group) when ``torch.distributed`` is initialised with world size > 1, else of
    this batch. With v the k-th largest value: tokens with H > v, plus the first k − #{H > v} tokens
    with H = v in global order (module docstring). Runs collectives when distributed.
    """
    m = mask.bool()
    local = entropy.detach()[m].nan_to_num(nan=-torch.inf)
    values, offset = gather_values(local, group)
    out = torch.zeros_like(m)
    k = top_count(values.numel(), ratio)
    if k == 0:
        return out
    v = torch.topk(values, k).values[-1]
    n_ties_taken = k - int((values > v).sum())
    tie_rank = torch.cumsum((local == v).long(), 0) - 1 + int((values[:offset] == v).sum())
    out[m] = (local > v) | ((local == v) & (tie_rank < n_ties_taken))
    return out


@register("forking")
class Forking(Algorithm):
    """Forking tokens (arXiv 2506.01939): DAPO loss restricted to high-entropy tokens:
    L = (1/N) Σ_{i,t} 1[H_{i,t} among the top ρ of the global mini-batch] · l_{i,t}; the normaliser N
    still counts all response tokens.

    Reference (github.com/Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR, ``get_global_entropy_top_mask`` in
    verl/trainer/ppo/core_algos.py, called in verl/workers/actor/dp_actor.py ``update_policy``): the
    entropy of the CURRENT policy from the training forward, top ⌈ρ·n⌉ over the flattened response
    tokens of each MICRO-batch on each rank (no all-gather), and a token-mean over the selected tokens
    only. Our choice: the old-policy entropy that ``shape_credit`` receives (same forward that recomputes
    the old log-probs; it equals the training-forward entropy on the first mini-batch of the first
    epoch, i.e. always when on-policy), with the threshold over the whole global mini-batch across
    data-parallel ranks: the paper's "top 20% of the batch", independent of micro-batching and ranks.
    ``shape_credit`` therefore runs collectives over ``process_group`` (default world group): every
    rank must call it. The normaliser keeps all tokens (ALGORITHM.md), so the loss scale is ρ times the
    reference's; Adam is scale-invariant, gradient clipping is not.
    """

    Config = ForkingConfig
    credit_is_group_local = False  # the top-ρ threshold is over the global mini-batch
    process_group = None  # the data-parallel group; None = the default (world) group

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        return top_entropy_mask(entropy, mask, self.config.top_ratio, self.process_group).to(advantages.dtype)
