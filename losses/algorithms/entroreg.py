"""EntroReg: entropy-regularised DAPO objective."""
from __future__ import annotations

from ..base import Algorithm
from ..registry import register


@register("entroreg")
class EntroReg(Algorithm):
    """Entropy bonus (Williams & Peng 1991; Mnih et al., A3C, arXiv 1602.01783), as compared in arXiv 2604.11056.

    L = L_DAPO − c · agg_{i,t}(H_θ(s_{i,t})), with H the CURRENT-policy entropy (pass it, with grad,
    as ``entropy=`` to ``policy_loss``; ``losses.entropy.logprobs_and_entropy`` provides it).
    """

