"""``Algorithm``: the object the pipeline drives (advantages, credit, diagnostics, normaliser, loss).

The base class is the DAPO-style clipped surrogate of ALGORITHM.md with identity credit; algorithm
families override the hooks ``begin_step``, ``shape_advantages``, ``token_weights``, ``log_ratio`` or
``pg_token_loss``. Register subclasses with ``losses.registry.register``.

Call order per RL step on every data-parallel rank: ``begin_step(step, total_steps)`` once, then per
mini-batch ``shape_credit`` (may run a collective, see there) and per micro-batch ``policy_loss``.
"""
from __future__ import annotations

import torch

from .advantages import SIGNED_REWARD_ESTIMATORS, compute_advantages
from .aggregation import Normalizer, aggregate, make_normalizer
from .config import AlgorithmConfig, fail
from .kl import kl_penalty
from .policy_loss import approx_kl_k3, clipped_surrogate, masked_mean_value, token_log_ratio
from .quadrants import quadrant_diagnostics
from .types import Credit, LossOutput


class Algorithm:
    """Token-level clipped policy gradient (base objective of ALGORITHM.md):

        L = agg_{i,t}( w_{i,t} · max(−Â'ρ, −Â' clip(ρ, 1−ε_low, 1+ε_high)) ) + β·agg(KL) − c·agg(H)
    with Â' = shaped advantage and w = token weight from ``shape_credit``.
    """

    Config = AlgorithmConfig

    #: True if the algorithm needs signed rewards (+1 correct, −1 wrong) instead of 0/1: its advantage
    #: has no baseline, so with 0/1 rewards wrong answers get Â = 0 and no signal (W-REINF, arXiv
    #: 2506.01347). The class attribute is the algorithm's own declaration; an instance also returns
    #: True when its config picks a baseline-free ``advantage_estimator`` (``reward``), so the pipeline
    #: reads it on the built instance: ``build_algorithm(cfg).requires_signed_rewards``.
    requires_signed_rewards: bool = False
    #: True when ``shape_credit`` of a group's tokens depends only on that group (and per-response
    #: statistics): credit can then be shaped per micro-batch of whole groups, from the entropies of the
    #: training forward itself (no separate old-policy pass). False for batch-wide statistics (Forking's
    #: global top-ρ entropy threshold).
    credit_is_group_local: bool = True

    def __init__(self, config: AlgorithmConfig):
        self.config = config
        if config.advantage_estimator in SIGNED_REWARD_ESTIMATORS:
            self.requires_signed_rewards = True

    @property
    def name(self) -> str:
        """The registry name this instance was built from."""
        return self.config.name

    # ---- (a) sequence-level advantages -------------------------------------------------------
    def compute_advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """rewards [B] float, group_ids [B] long -> advantages [B] (estimator from the config)."""
        return compute_advantages(rewards, group_ids, self.config.advantage_estimator, self.config.adv_eps)

    # ---- (b) credit shaping over the whole mini-batch -----------------------------------------
    def begin_step(self, step: int, total_steps: int) -> None:
        """Hook: training progress, called by the train worker before ``shape_credit`` of each RL step.

        step: 0-based index of the RL step about to run (it continues after a resume), total_steps: the
        run's number of RL steps (≥ 1); progress = step / total_steps. Default: no-op. Overrides must be
        a pure function of (step, total_steps) so that resuming from a checkpoint reproduces the
        schedule (A3PO decays its token scales with it).
        """

    @torch.no_grad()
    def shape_credit(self, advantages, entropy, old_logprobs, response_mask, group_ids) -> Credit:
        """advantages/entropy/old_logprobs/response_mask [B, T], group_ids [B] -> Credit([B,T], [B,T]).

        Shaped advantages and token weights are 0 on padding. entropy and old_logprobs come from the
        old-policy forward that recomputes the old log-probs. May run a collective over the default
        ``torch.distributed`` group (Forking: the global top-ρ entropy threshold), so when
        ``torch.distributed`` is initialised every data-parallel rank must call it, the same number of
        times and in the same order (also with an empty mini-batch).
        """
        m = response_mask.bool()
        adv = torch.where(m, advantages.detach(), torch.zeros_like(advantages))
        ent = entropy.detach()
        shaped = self.shape_advantages(adv, ent, old_logprobs.detach(), m, group_ids)
        weight = self.token_weights(adv, ent, old_logprobs.detach(), m, group_ids)
        zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
        return Credit(torch.where(m, shaped, zero), torch.where(m, weight.to(adv.dtype), zero))

    def shape_advantages(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        """Hook: shaped advantages [B, T]. Default: unchanged."""
        return advantages

    def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids) -> torch.Tensor:
        """Hook: per-token loss weights [B, T]. Default: 1."""
        return torch.ones_like(advantages)

    def diagnostics(self, advantages, credit: Credit, entropy, response_mask, group_ids) -> dict[str, float]:
        """Four-quadrant statistics (``losses.quadrants.quadrant_diagnostics``) plus credit summaries."""
        signal = credit.advantages * credit.token_weight
        out = quadrant_diagnostics(advantages, signal, entropy, response_mask, group_ids)
        m = response_mask.bool()
        out["credit/token_weight_mean"] = masked_mean_value(credit.token_weight, m)
        out["credit/adv_abs_mean"] = masked_mean_value(advantages.abs(), m)
        out["credit/shaped_adv_abs_mean"] = masked_mean_value(signal.abs(), m)
        return out

    def normalizer(self, response_mask, dp_world_size: int = 1, grad_accum_steps: int = 1) -> Normalizer:
        """Global counts from the mask [B, T] of the WHOLE global batch (see losses.aggregation)."""
        return make_normalizer(response_mask, dp_world_size, grad_accum_steps, self.config.max_response_length)

    # ---- (c) per micro-batch loss --------------------------------------------------------------
    def log_ratio(self, logprobs, old_logprobs, response_mask) -> torch.Tensor:
        """Hook: log ρ [b, T] fed to the surrogate. Default: token ratio."""
        return token_log_ratio(logprobs, old_logprobs)

    def pg_token_loss(self, logprobs, old_logprobs, credit: Credit, response_mask):
        """Hook: (per-token surrogate [b, T], clipped bool [b, T], extra metrics dict)."""
        c = self.config
        log_r = self.log_ratio(logprobs, old_logprobs, response_mask)
        loss, clipped = clipped_surrogate(log_r, credit.advantages, c.clip_low, c.clip_high, c.dual_clip)
        return loss, clipped, {}

    def policy_loss(self, logprobs, old_logprobs, credit: Credit, response_mask, norm: Normalizer,
                    ref_logprobs=None, entropy=None) -> LossOutput:
        """Scalar micro-batch loss, scaled for DeepSpeed accumulation (proof in losses.aggregation).

        logprobs [b, T] with grad; old_logprobs [b, T]; credit: the mini-batch Credit sliced to these
        rows; response_mask [b, T]; ref_logprobs [b, T] required if kl_coef > 0; entropy [b, T]
        (current policy, with grad) required if entropy_coef > 0.
        """
        c, m = self.config, response_mask.bool()
        credit = credit.to(logprobs.dtype)
        pg_tok, clipped, metrics = self.pg_token_loss(logprobs, old_logprobs, credit, m)
        pg_loss = aggregate(pg_tok * credit.token_weight, m, norm, c.aggregation)
        loss = pg_loss + self._kl_term(logprobs, ref_logprobs, m, norm, metrics)
        loss = loss - self._entropy_term(entropy, m, norm, metrics)
        metrics.update({
            "pg_loss": float(pg_loss.detach()) / norm.scale,
            "clip_fraction": masked_mean_value(clipped.to(logprobs.dtype), m),
            "approx_kl": masked_mean_value(approx_kl_k3(token_log_ratio(logprobs, old_logprobs)), m),
        })
        return LossOutput(loss, metrics)

    def _kl_term(self, logprobs, ref_logprobs, m, norm, metrics):
        c = self.config
        if c.kl_coef == 0:
            return 0.0
        if ref_logprobs is None:
            fail("kl_coef", f"{c.kl_coef} > 0 needs ref_logprobs in policy_loss")
        kl = aggregate(kl_penalty(logprobs, ref_logprobs, c.kl_estimator), m, norm, c.aggregation)
        metrics["kl_loss"] = float(kl.detach()) / norm.scale
        return c.kl_coef * kl

    def _entropy_term(self, entropy, m, norm, metrics):
        c = self.config
        if entropy is not None:
            metrics["entropy"] = masked_mean_value(entropy, m)
        if c.entropy_coef == 0:
            return 0.0
        if entropy is None:
            fail("entropy_coef", f"{c.entropy_coef} > 0 needs the current-policy entropy in policy_loss")
        return c.entropy_coef * aggregate(entropy, m, norm, c.aggregation)
