"""Typed configuration of the serving deployment (mirrors configs/serve/serve.yaml)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class AutoscalingConfig:
    """Replica autoscaling of the model deployment (Ray Serve ``autoscaling_config``)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 16.0


@dataclass
class EngineConfig:
    """vLLM engine settings used for every checkpoint."""

    dtype: str = "float32"              # bf16 is ~80x slower on CPU
    max_model_len: int | None = None    # default: the checkpoint's max_position_embeddings
    enforce_eager: bool = True
    seed: int = 0
    kv_cache_space_gb: int = 1          # VLLM_CPU_KVCACHE_SPACE (CPU backend)
    gpu_memory_utilization: float = 0.85
    max_num_seqs: int = 64


@dataclass
class ServeConfig:
    """What to serve and how: checkpoints by model id, HTTP binding, limits, autoscaling."""

    checkpoint: str | None = None       # a single HF checkpoint dir (served as `model_name`)
    model_name: str | None = None       # default: the checkpoint folder's name
    checkpoints: dict[str, str] = field(default_factory=dict)  # more models: id -> dir
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    app_name: str = "eapo-llm"
    api_key: str | None = None          # Bearer token; also env EAPO_API_KEY
    max_tokens_limit: int = 4096
    max_n: int = 64
    max_logprobs: int = 20
    max_models_per_replica: int = 2
    replica_num_cpus: float = 0.5
    ingress_num_cpus: float = 0.25
    max_ongoing_requests: int = 64
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def models(self) -> dict[str, str]:
        """Model id -> absolute checkpoint dir (``checkpoint`` plus ``checkpoints``)."""
        out = {}
        if self.checkpoint:
            name = self.model_name or os.path.basename(os.path.normpath(self.checkpoint))
            out[name] = self.checkpoint
        out.update(self.checkpoints)
        for name, path in out.items():
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise ValueError(f"serve config: checkpoint for model {name!r} at {path!r} has no config.json")
        if not out:
            raise ValueError("serve config: set 'checkpoint=<dir>' or 'checkpoints={id: dir}'")
        return {k: os.path.abspath(v) for k, v in out.items()}

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("EAPO_API_KEY") or None


def _build(cls, data: Mapping[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"serve config: unknown field(s) {unknown} in {where}")
    kwargs = {}
    for key, value in data.items():
        sub = {"autoscaling": AutoscalingConfig, "engine": EngineConfig}.get(key) if cls is ServeConfig else None
        kwargs[key] = _build(sub, value or {}, f"{where}.{key}") if sub else value
    return cls(**kwargs)


def to_serve_config(cfg: Any) -> ServeConfig:
    """Build a ``ServeConfig`` from a dataclass, dict or DictConfig (unknown keys rejected)."""
    if isinstance(cfg, ServeConfig):
        return cfg
    if not isinstance(cfg, Mapping) or type(cfg).__name__ == "DictConfig":
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return _build(ServeConfig, dict(cfg), "serve")
