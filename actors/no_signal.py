"""No optimizer step without signal.

A response token carries signal when its credit Â'_t · w_t (``losses.Credit``: shaped advantage times token
weight) is non-zero on the response mask. When no token of an optimizer step's mini-batch carries signal on any
data-parallel rank (every group's rewards equal, dynamic sampling out of rounds, a quadrant mask that selects
nothing), the policy-gradient term is exactly zero; AdamW would still move the weights (its momentum from
earlier steps, weight decay), and a KL or entropy term alone would move them on no reward information. Such a
step is skipped.

Skipping under DeepSpeed: the micro-batches are still forwarded and backpropagated, and ``engine.step()`` is
still called at every micro-batch, so DeepSpeed's bookkeeping stays exact — the micro-step counter that decides
gradient-accumulation boundaries, the global step, the zeroing of accumulated gradients, ZeRO's gradient
partitions and its copy of the (unchanged) fp32 master weights into the parameters. Only the torch optimizer's
own ``step`` is replaced by a no-op for that one call (:func:`optimizer_step_skipped`): AdamW's moments, its step
count (bias correction) and the weights stay exactly as they were. The run configures no LR scheduler (constant
``trainer.lr``), so nothing else would advance. The decision is taken on the all-reduced sum of every
rank's count (:func:`step_or_skip`), so all ranks skip or step together.
"""
from __future__ import annotations

import contextlib

import torch


def signal_tokens(credit, response_mask: torch.Tensor) -> float:
    """Number of response tokens whose credit Â'·w is non-zero. credit: ``losses.Credit`` [b, T]; mask [b, T]."""
    carried = (credit.advantages * credit.token_weight != 0) & response_mask.bool()
    return float(carried.sum())


@contextlib.contextmanager
def optimizer_step_skipped(engine):
    """Inside the block, the torch optimizer under ``engine`` (``engine.basic_optimizer``: the AdamW that ZeRO
    and the bf16 wrapper step) does nothing when stepped; everything DeepSpeed does around it still happens."""
    optimizer = engine.basic_optimizer
    own = optimizer.__dict__.get("step")  # normally None: torch optimizers step through their class
    optimizer.step = lambda *args, **kwargs: None  # an instance attribute shadows the class's step
    try:
        yield
    finally:
        if own is None:
            del optimizer.step
        else:
            optimizer.step = own


def step_or_skip(engine, signal: float) -> bool:
    """``engine.step()`` at a gradient-accumulation boundary, with the optimizer step skipped when ``signal`` is 0:
    the :func:`signal_tokens` of this optimizer step's micro-batches summed over them *and over all ranks* (the
    caller all-reduces it, so every rank decides alike). Returns whether the optimizer stepped."""
    with optimizer_step_skipped(engine) if signal == 0 else contextlib.nullcontext():
        engine.step()
    return signal != 0
