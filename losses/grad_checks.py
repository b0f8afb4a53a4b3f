"""Manipulation checks: did credit shaping change the policy-gradient *update*, and where does it come from?

Issue 15 / ALGORITHM.md ("share of the policy-gradient signal"): a token-weighting method can only matter if
the shaped gradient points somewhere else than the plain one. At the start of an RL step π_θ = π_old, so the
ratio is 1, no token is clipped, and the gradient of the clipped surrogate is that of the linear objective

    J(s) = −(1/N) Σ_{i,t} m_{i,t} · s_{i,t} · log π_θ(o_{i,t} | ·)          (``pg_objective``)

with s = Â'·w (shaped advantage × token weight, the algorithm's credit) or s = Â (plain group advantage,
DAPO/GRPO's credit). From one micro-batch, by autograd on the parameters θ (exact, no approximation):

    grad/cos_shaped_plain       = cos(∇J(Â'·w), ∇J(Â))
    grad/norm_ratio_shaped_plain = ‖∇J(Â'·w)‖ / ‖∇J(Â)‖   (a uniform rescale: ratio ≠ 1, cos = 1;
                                                           AdamW then cancels it)
    quadrant/Q/grad_share       = ‖∇J(Â'·w · 1_Q)‖² / Σ_Q' ‖∇J(Â'·w · 1_Q')‖²   (Q: PHR, PLR, NLR, NHR)

The shares are of squared gradient norms per quadrant (cross terms between quadrants are not attributed), so
they sum to 1. Cost: five backward passes of one micro-batch (four quadrants + plain; the shaped gradient is
the sum of the four quadrant gradients plus, when non-zero, the credit on tokens in no quadrant).
"""
from __future__ import annotations

import torch

from .quadrants import QUADRANTS, quadrant_masks, union_mask


def pg_objective(logprobs: torch.Tensor, signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """J = −Σ m·s·logπ / Σ m: logprobs [b, T] with grad, signal [b, T] (credit, no grad), mask [b, T]."""
    m = mask.to(logprobs.dtype)
    return -(signal.detach().to(logprobs.dtype) * logprobs * m).sum() / m.sum().clamp(min=1)


def flat_grad(objective: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """∇_θ objective as one float64 vector [P] (zeros for parameters it does not reach); the graph is kept."""
    grads = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
                      for g, p in zip(grads, params)])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float("nan")


def credit_grad_checks(logprobs, plain_advantages, shaped_signal, entropy, mask, group_ids,
                       params: list[torch.Tensor]) -> dict[str, float]:
    """The checks of the module docstring for one micro-batch; {} when no token carries plain signal.

    logprobs [b, T] (current policy, with grad; π_θ = π_old), plain_advantages [b, T] (Â on response tokens),
    shaped_signal [b, T] (Â'·w, what the algorithm multiplies −log π by), entropy [b, T] (old policy, for the
    quadrants), mask [b, T], group_ids [b], params: the trainable parameters (full, not ZeRO-3 shards).
    """
    m = mask.bool()
    if not bool((plain_advantages.abs() * m).sum() > 0):
        return {}
    masks = quadrant_masks(plain_advantages, entropy, m, group_ids)
    per_q = {q: flat_grad(pg_objective(logprobs, shaped_signal * masks[q], m), params) for q in QUADRANTS}
    shaped = sum(per_q.values())
    rest = m & ~union_mask(masks, QUADRANTS)
    if bool((shaped_signal.abs() * rest).sum() > 0):
        shaped = shaped + flat_grad(pg_objective(logprobs, shaped_signal * rest, m), params)
    plain = flat_grad(pg_objective(logprobs, plain_advantages, m), params)
    sq = {q: float(g @ g) for q, g in per_q.items()}
    total = sum(sq.values())
    ratio = float(shaped.norm() / plain.norm()) if float(plain.norm()) > 0 else float("nan")
    out = {"grad/cos_shaped_plain": _cos(shaped, plain), "grad/norm_ratio_shaped_plain": ratio}
    out.update({f"quadrant/{q}/grad_share": sq[q] / total if total > 0 else 0.0 for q in QUADRANTS})
    return out
