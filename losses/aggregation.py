"""Split-invariant loss aggregation over a global batch.

Let the global batch (one optimizer step: all micro-batches on all data-parallel ranks) have
N response tokens, S non-empty responses and constant length L. Per-token losses l_{i,t}, mask m_{i,t}.
The global objectives are

    token_mean               J = Σ_i Σ_t m·l / N                       (DAPO, arXiv 2503.14476; EAPO)
    seq_mean_token_mean      J = Σ_i (Σ_t m·l / |o_i|) / S             (GRPO, arXiv 2402.03300)
    seq_mean_token_sum       J = Σ_i Σ_t m·l / S
    seq_mean_token_sum_norm  J = Σ_i Σ_t m·l / (S·L)                   (Dr.GRPO, arXiv 2503.20783)

Every form is a sum over responses of a term c_i that only needs the response's own tokens and the
global constants (N, S, L). A micro-batch b on rank r returns

    loss_{r,b} = D·K · Σ_{i∈(r,b)} c_i            with D = dp_world_size, K = grad_accum_steps.

Proof of the pipeline contract (OpenRLHF loss_utils style): DeepSpeed's ``engine.backward(loss)``
back-propagates loss / K and accumulates, and the all-reduce averages gradients over D ranks, so the
applied gradient is (1/D) Σ_r Σ_b (1/K) ∇loss_{r,b} = Σ_r Σ_b ∇Σ_{i∈(r,b)} c_i = ∇ Σ_i c_i = ∇J,
whatever the partition of responses into ranks and micro-batches. A plain-PyTorch caller that just
sums ``loss.backward()`` over micro-batches on one process uses D = K = 1.
The counts (N, S) must be those of the GLOBAL batch: all-reduce them across ranks before building
``Normalizer`` when D > 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.registry import Registry


@dataclass(frozen=True)
class Normalizer:
    """Global constants of one optimizer step (already all-reduced over DP ranks).

    total_tokens: N, response tokens in the global batch. total_sequences: S, responses with ≥ 1
    response token (empty padding rows are not counted). max_response_length: L, Dr.GRPO's constant.
    dp_world_size: D. grad_accum_steps: K (micro-batches per rank per optimizer step).
    """

    total_tokens: float
    total_sequences: float
    max_response_length: float
    dp_world_size: int = 1
    grad_accum_steps: int = 1

    @property
    def scale(self) -> float:
        """D·K, the factor that undoes DeepSpeed's 1/K loss scaling and 1/D gradient averaging."""
        return float(self.dp_world_size * self.grad_accum_steps)


def make_normalizer(response_mask: torch.Tensor, dp_world_size: int = 1, grad_accum_steps: int = 1,
                    max_response_length: int | None = None) -> Normalizer:
    """Normalizer from the mask [B, T] of the WHOLE global batch; L defaults to T."""
    m = response_mask.bool()
    length = response_mask.shape[-1] if max_response_length is None else max_response_length
    return Normalizer(float(m.sum()), float(m.any(-1).sum()), float(length), dp_world_size, grad_accum_steps)


Aggregator = Callable[[torch.Tensor, torch.Tensor, Normalizer], torch.Tensor]
AGGREGATIONS: Registry[Aggregator] = Registry("aggregation", key="aggregation")


def aggregator(name: str):
    """Decorator registering ``fn(masked_loss [b,T], mask [b,T] bool, norm) -> Σ_i c_i`` under ``name``."""
    return AGGREGATIONS.register(name)


def known_aggregations() -> list[str]:
    """Sorted names of the aggregation modes."""
    return AGGREGATIONS.names()


def aggregate(token_loss: torch.Tensor, response_mask: torch.Tensor, norm: Normalizer,
              mode: str = "token_mean") -> torch.Tensor:
    """Scalar micro-batch loss D·K·Σ_{i∈micro-batch} c_i (see module docstring).

    token_loss [b, T] (padding may hold anything, even NaN), response_mask [b, T] bool/0-1.
    """
    fn = AGGREGATIONS.get(mode)
    m = response_mask.bool()
    masked = torch.where(m, token_loss, torch.zeros((), dtype=token_loss.dtype, device=token_loss.device))
    return fn(masked, m, norm) * norm.scale


@aggregator("token_mean")
def _token_mean(masked, m, norm):
    return masked.sum() / max(norm.total_tokens, 1.0)


@aggregator("seq_mean_token_mean")
def _seq_mean_token_mean(masked, m, norm):
    per_seq = masked.sum(-1) / m.sum(-1).clamp_min(1).to(masked.dtype)
    return per_seq.sum() / max(norm.total_sequences, 1.0)


@aggregator("seq_mean_token_sum")
def _seq_mean_token_sum(masked, m, norm):
    return masked.sum() / max(norm.total_sequences, 1.0)


@aggregator("seq_mean_token_sum_norm")
def _seq_mean_token_sum_norm(masked, m, norm):
    return masked.sum() / (max(norm.total_sequences, 1.0) * max(norm.max_response_length, 1.0))
