"""One RL step's policy update on one worker's batch: credit shaping, loss, optimizer step(s).

Two paths, the same gradient:

The training forward encodes each group's prompt once for its G responses
(``actors.policy_forward.shared_prompt_logprobs_entropy``).

* **fused** (one mini-batch, one epoch, group-local credit, micro-batches of whole groups): each
  micro-batch is forwarded once, with grad. π_old is the policy being trained, so the ratio's
  denominator is the detached current log-prob (ρ ≡ 1, ∇ρ = ∇log π: the gradient is unchanged) and the
  credit is shaped from that forward's entropies (no grad flows through them). No separate pass.
* **separate**: old-policy log-probs and entropies of the whole batch first (no grad), credit shaped
  over the batch, then ``epochs_per_step`` × ``mini_batches_per_step`` optimizer steps.

Both multiply each token's loss by the truncated importance weight min(π_old/μ, C) when the IS
correction is on (``losses.is_correction``): μ is the rollout engine's behaviour policy. Both skip an
optimizer step whose tokens carry no signal on any rank (:mod:`actors.no_signal`).

With ``algorithm.kl_coef`` β > 0 each micro-batch is also forwarded, without grad, through the frozen
reference policy (the run's initial checkpoint, ``actors.train_worker.build_reference``); its log-probs
enter the loss's β·agg(KL(π_θ ‖ π_ref)) term (``losses.kl``, estimator ``algorithm.kl_estimator``).

Dr.GRPO's constant L (``seq_mean_token_sum_norm``) is ``algorithm.max_response_length``, or the generation
limit ``rollout.max_tokens`` when that is null.

Entropies for credit shaping (EAPO, quadrants, Forking) are those of π_old, the weights being
updated. Under staleness k they are k updates newer than the sampler's: the engine returns only the
sampled token's log-prob, and the full-vocabulary entropy of μ would cost a V-wide output per token.
The IS weight corrects the gradient for the lag; the entropy *ranking* within a group, which is what
the credit uses, moves little in k updates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from actors.no_signal import signal_tokens, step_or_skip
from actors.policy_forward import old_policy_stats, policy_logprobs_entropy
from losses import Credit, Normalizer
from losses.grad_checks import credit_grad_checks
from losses.is_correction import truncated_is_weights


@dataclass
class UpdateResult:
    """What the step's metrics need: old log-probs, entropies and credit [B, T] of the whole batch."""

    old_logprobs: torch.Tensor
    entropy: torch.Tensor
    credit: Credit
    stats: dict[str, float]


def all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def local_grad_norm(engine) -> float:
    """L2 norm of the (already all-reduced) gradients before clipping; ZeRO-0 keeps full grads."""
    grads = [p.grad.detach().float() for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def grad_check_due(cfg, step: int) -> bool:
    """Whether 0-based RL step ``step`` measures the manipulation checks (``trainer.grad_check_every``, 0 = never):
    the exact shaped-vs-plain gradient cosine and per-quadrant gradient shares of :mod:`losses.grad_checks`, on
    the first ``trainer.grad_check_rows`` responses (whole groups) of this rank's first micro-batch: one more
    forward and five more backward passes of them."""
    every = cfg.trainer.grad_check_every
    return bool(every) and step % every == 0


def grad_check_size(cfg, micro: int) -> int:
    """Responses the checks are measured on: ``trainer.grad_check_rows`` rounded down to whole groups of
    ``rollout.n`` (at least one group), at most the micro-batch of ``micro``."""
    g = cfg.rollout.n
    return min(micro, max(g, cfg.trainer.grad_check_rows // g * g))


def _grad_checks(engine, part, cfg, old_entropy, credit: Credit) -> dict[str, float]:
    """losses.grad_checks on one micro-batch, before its update (π_θ = π_old there, the ratio is 1); credit without
    the IS weight (it scales shaped and plain alike). Its own forward through the bare module: DeepSpeed's engine
    hooks its outputs' backward (gradient-accumulation scaling, ZeRO reduction), which the checks must not touch."""
    kw = forward_kwargs(cfg)
    rows = grad_check_size(cfg, part.size)
    part, old_entropy, credit = part.rows(slice(0, rows)), old_entropy[:rows], credit[:rows]
    logprobs = engine.module(part, kw["group_size"], kw["temperature"], kw["chunk_size"])[0]
    params = [p for p in engine.module.parameters() if p.requires_grad]
    plain = part.advantages[:, None].to(logprobs.dtype) * part.response_mask
    return credit_grad_checks(logprobs, plain, credit.advantages * credit.token_weight, old_entropy,
                              part.response_mask, part.group_ids, params)


def is_correction_on(cfg) -> bool:
    """``trainer.is_correction``: "auto" = on exactly when the behaviour distribution μ can differ from the
    trainer's π_old: ``rollout.staleness > 0`` (older weights) or ``rollout.top_p < 1`` (vLLM samples from, and
    reports the processed log-probs of, the top-p-truncated and renormalised distribution, while π_old is the
    full softmax: even on-policy μ(o_t) = π_old(o_t) / (nucleus mass) ≠ π_old(o_t))."""
    mode = cfg.trainer.is_correction
    return (cfg.rollout.staleness > 0 or cfg.rollout.top_p < 1) if mode == "auto" else bool(mode)


def fused(cfg, algo, micro: int) -> bool:
    """Whether the fused path gives the same gradient (see module docstring)."""
    t = cfg.trainer
    return (t.mini_batches_per_step == 1 and t.epochs_per_step == 1 and algo.credit_is_group_local
            and micro % cfg.rollout.n == 0)


class _Stats:
    def __init__(self):
        self.values: dict[str, list[float]] = {}

    def add(self, **kv: float) -> None:
        for k, v in kv.items():
            self.values.setdefault(k, []).append(v)

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.values.items()}


def forward_kwargs(cfg) -> dict:
    """How every training forward projects onto the vocabulary: rows come in groups of ``rollout.n``
    sharing a prompt, logits divided by ``rollout.temperature`` (as the sampler's), ``trainer.logprob_chunk_size``
    tokens per chunk (memory only: the results do not depend on it)."""
    return {"group_size": cfg.rollout.n, "temperature": cfg.rollout.temperature,
            "chunk_size": cfg.trainer.logprob_chunk_size}


def importance_weights(cfg, old_logprobs, part):
    """(w [b, T], metrics) of the truncated IS correction min(π_old/μ, ``trainer.is_cap``) when it is on
    (:func:`is_correction_on`), else None."""
    if not is_correction_on(cfg):
        return None
    return truncated_is_weights(old_logprobs, part.behaviour_logprobs, part.response_mask, cfg.trainer.is_cap)


def policy_forward(engine, part, cfg):
    """(log-probs, entropies) [b, T] of the policy on ``part``, through the engine's forward (ZeRO-3 gathers)."""
    kw = forward_kwargs(cfg)
    return engine(part, kw["group_size"], kw["temperature"], kw["chunk_size"])


@torch.no_grad()
def reference_logprobs(reference, part, cfg) -> torch.Tensor:
    """log π_ref(o_t | s_t) [b, T] of the frozen reference policy (temperature-scaled like the policy's)."""
    return policy_logprobs_entropy(reference, part, **forward_kwargs(cfg))[0]


class _OptimizerStep:
    """The micro-batches of one optimizer step: their summed loss shares, this rank's tokens with signal, and
    what the boundary decided (global signal count, gradient norm before the step)."""

    def __init__(self):
        self.loss_sum, self.local_signal, self.signal, self.grad_norm = 0.0, 0.0, None, None


def _micro_loss(engine, algo, part, old_lp, credit: Credit, norm, cfg, stats: _Stats, opt: _OptimizerStep,
                logprobs=None, entropy=None, reference=None, check_entropy=None) -> None:
    """Loss of one micro-batch, backward and ``engine.step()``; at the accumulation boundary the optimizer step
    is taken only if a token of the step carried signal on some rank (:mod:`actors.no_signal`).
    ``check_entropy`` (old-policy entropies [b, T]): measure the manipulation checks on this micro-batch first."""
    if logprobs is None:
        logprobs, entropy = policy_forward(engine, part, cfg)
    if check_entropy is not None:
        stats.add(**_grad_checks(engine, part, cfg, check_entropy, credit))
    opt.local_signal += signal_tokens(credit, part.response_mask)
    weights = importance_weights(cfg, old_lp, part)
    if weights is not None:
        w, is_metrics = weights
        credit = Credit(credit.advantages, credit.token_weight * w)
        stats.add(**is_metrics)
    ref_lp = reference_logprobs(reference, part, cfg) if reference is not None else None
    out = algo.policy_loss(logprobs, old_lp, credit, part.response_mask, norm, ref_logprobs=ref_lp, entropy=entropy)
    engine.backward(out.loss)
    opt.loss_sum += out.metrics["pg_loss"]
    if engine.is_gradient_accumulation_boundary():
        opt.grad_norm = local_grad_norm(engine)
        opt.signal = all_reduce_sum([opt.local_signal])[0]  # every rank at the same boundary: they decide alike
        step_or_skip(engine, opt.signal)
    else:
        engine.step()
    stats.add(clip_fraction=out.metrics["clip_fraction"], approx_kl=out.metrics["approx_kl"])
    if "kl_loss" in out.metrics:
        stats.add(kl_loss=out.metrics["kl_loss"])


def response_length_constant(cfg, algo) -> float:
    """L of ``seq_mean_token_sum_norm``: ``algorithm.max_response_length``, else ``rollout.max_tokens``."""
    return float(algo.config.max_response_length or cfg.rollout.max_tokens)


def _normalizer(batch_mask, cfg, algo, world: int, grad_accum: int) -> Normalizer:
    tokens, seqs = all_reduce_sum([float(batch_mask.sum()), float(batch_mask.any(-1).sum())])
    return Normalizer(tokens, seqs, response_length_constant(cfg, algo), world, grad_accum)


def _finish_optimizer_step(engine, stats: _Stats, opt: _OptimizerStep) -> None:
    stats.add(loss=all_reduce_sum([opt.loss_sum])[0])
    reported = engine.get_global_grad_norm()  # set by ZeRO-1/2/3 optimizers, None under ZeRO-0
    stats.add(grad_norm=float(reported) if reported is not None else opt.grad_norm)


def signal_stats(steps: list[_OptimizerStep], first_epoch: int) -> dict[str, float]:
    """``train/tokens_trained``: response tokens with non-zero credit, all ranks, each counted once (the
    optimizer steps of the first epoch: ``steps[:first_epoch]``); ``train/no_signal``: 1 when there were none,
    so every optimizer step of the RL step was skipped; ``train/skipped_optimizer_steps``."""
    tokens = sum(o.signal for o in steps[:first_epoch])
    return {"train/tokens_trained": tokens, "train/no_signal": float(tokens == 0),
            "train/skipped_optimizer_steps": float(sum(o.signal == 0 for o in steps))}


def fused_update(engine, algo, batch, cfg, world: int, micro: int, reference=None, check=False) -> UpdateResult:
    """One optimizer step, one forward per micro-batch of whole groups (see module docstring)."""
    stats, opt = _Stats(), _OptimizerStep()
    norm = _normalizer(batch.response_mask, cfg, algo, world, batch.size // micro)
    parts: list[tuple] = []
    for u0 in range(0, batch.size, micro):
        part = batch.rows(slice(u0, u0 + micro))
        lp, ent = policy_forward(engine, part, cfg)
        old_lp, old_ent = lp.detach(), ent.detach()
        adv_tok = part.advantages[:, None] * part.response_mask
        credit = algo.shape_credit(adv_tok, old_ent, old_lp, part.response_mask, part.group_ids)
        _micro_loss(engine, algo, part, old_lp, credit, norm, cfg, stats, opt, lp, ent, reference,
                    old_ent if check and u0 == 0 else None)
        parts.append((old_lp, old_ent, credit))
    _finish_optimizer_step(engine, stats, opt)
    credit = Credit(torch.cat([p[2].advantages for p in parts]), torch.cat([p[2].token_weight for p in parts]))
    return UpdateResult(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), credit,
                        {**stats.means(), **signal_stats([opt], 1)})


def separate_update(engine, algo, batch, cfg, world: int, micro: int, reference=None, check=False) -> UpdateResult:
    """Old-policy pass, batch-wide credit, then epochs × mini-batches of optimizer steps."""
    t = cfg.trainer
    old_lp, old_ent = old_policy_stats(engine, batch, micro, **forward_kwargs(cfg))
    adv_tok = batch.advantages[:, None] * batch.response_mask
    credit = algo.shape_credit(adv_tok, old_ent, old_lp, batch.response_mask, batch.group_ids)
    mini = batch.size // t.mini_batches_per_step
    stats, steps = _Stats(), []
    for _ in range(t.epochs_per_step):
        for m0 in range(0, batch.size, mini):
            norm = _normalizer(batch.response_mask[m0: m0 + mini], cfg, algo, world, mini // micro)
            steps.append(_OptimizerStep())
            for u0 in range(m0, m0 + mini, micro):
                sub = slice(u0, u0 + micro)
                first = check and len(steps) == 1 and u0 == 0
                _micro_loss(engine, algo, batch.rows(sub), old_lp[sub], credit[sub], norm, cfg, stats, steps[-1],
                            reference=reference, check_entropy=old_ent[sub] if first else None)
            _finish_optimizer_step(engine, stats, steps[-1])
    return UpdateResult(old_lp, old_ent, credit, {**stats.means(), **signal_stats(steps, t.mini_batches_per_step)})


def update(engine, algo, batch, cfg, world: int, micro: int, reference=None, check=False) -> UpdateResult:
    """The step's update by the fused path when it is exact, else the separate one; ``reference``: the
    frozen KL reference policy (None without a KL term); ``check``: measure the manipulation checks
    (:func:`grad_check_due`) on the first micro-batch, where π_θ = π_old."""
    path = fused_update if fused(cfg, algo, micro) else separate_update
    return path(engine, algo, batch, cfg, world, micro, reference, check)
