"""GSPO: sequence-level importance ratio."""
from __future__ import annotations

from ..base import Algorithm
from ..policy_loss import sequence_log_ratio
from ..registry import register


@register("gspo")
class GSPO(Algorithm):
    """GSPO (Zheng et al., arXiv 2507.18071): s_i = exp((1/|o_i|) Σ_t log ρ_{i,t});

    L = (1/S) Σ_i max(−Â_i s_i, −Â_i clip(s_i, 1−ε_low, 1+ε_high)), implemented in the GSPO-token form
    (see ``losses.policy_loss.sequence_log_ratio``) with seq-mean-token-mean aggregation.
    """

    def log_ratio(self, logprobs, old_logprobs, response_mask):
        return sequence_log_ratio(logprobs, old_logprobs, response_mask)
