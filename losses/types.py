"""Small value types exchanged between ``losses`` and the training pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Credit:
    """Per-token credit for the policy-gradient loss, produced by ``Algorithm.shape_credit``.

    advantages:   [B, T] float — shaped advantage Â' that replaces Â in the surrogate.
    token_weight: [B, T] float — multiplies the per-token policy-gradient loss
                  (0/1 quadrant or forking masks, A3PO / W-REINF weights; 1 elsewhere, 0 on padding).
    Both are computed without gradient over the whole mini-batch, then sliced per micro-batch.
    """

    advantages: torch.Tensor
    token_weight: torch.Tensor

    def select(self, rows) -> "Credit":
        """Rows ``rows`` (slice, index tensor or bool mask over B) of both tensors."""
        return Credit(self.advantages[rows], self.token_weight[rows])

    __getitem__ = select

    def to(self, *args, **kwargs) -> "Credit":
        """Move / cast both tensors (``torch.Tensor.to`` arguments)."""
        return Credit(self.advantages.to(*args, **kwargs), self.token_weight.to(*args, **kwargs))


@dataclass
class LossOutput:
    """Result of ``Algorithm.policy_loss`` for one micro-batch.

    loss:    scalar tensor with grad; already scaled so that DeepSpeed-style accumulation
             (divide by grad_accum_steps, average over DP ranks) yields the global-batch gradient.
    metrics: floats; at least "clip_fraction", "approx_kl" (token means over the micro-batch) and
             "pg_loss" (this micro-batch's additive share of the global objective).
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
