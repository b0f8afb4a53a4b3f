"""GRPO, DAPO and Dr.GRPO: the clipped surrogate with different advantages and aggregation."""
from __future__ import annotations

from ..base import Algorithm
from ..registry import register


@register("grpo")
class GRPO(Algorithm):
    """GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300).

    Â_i = (r_i − mean_g r)/(std_g r + ε);
    L = (1/S) Σ_i (1/|o_i|) Σ_t max(−Âρ, −Â clip(ρ, 1±0.2)) + β·KL.
    """


@register("dapo")
class DAPO(Algorithm):
    """DAPO (Yu et al., arXiv 2503.14476): clip-higher (ε_low 0.2, ε_high 0.28), token-mean over the batch.

    L = (1/Σ|o_i|) Σ_i Σ_t max(−Âρ, −Â clip(ρ, 1−ε_low, 1+ε_high)). Dynamic sampling and overlong
    shaping act on data, in the pipeline (config keys ``dynamic_sampling``, ``overlong_buffer``, on
    here): ``losses.advantages.informative_groups`` / ``losses.reward_shaping.overlong_penalty``.
    """


@register("dr_grpo")
class DrGRPO(Algorithm):
    """Dr.GRPO (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783).

    Â_i = r_i − mean_g r (no std);  L = (1/(S·L_max)) Σ_i Σ_t max(−Âρ, −Â clip(ρ, 1±ε)).
    """
