"""Typed configuration of the server (mirrors configs/serve/serve.yaml); unknown or invalid fields fail by name."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class AutoscalingConfig:
    """Replicas per model (Ray Serve ``autoscaling_config``)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 16.0


@dataclass
class LimitsConfig:
    """What one request may ask for; larger requests get a 4xx before any work."""

    max_body_bytes: int = 1 << 20
    max_sequences: int = 128       # prompts x n
    max_tokens: int = 4096


@dataclass
class HealthConfig:
    """Serve replaces a replica whose engine is dead or does not answer within ``probe_timeout_s``."""

    period_s: float = 10.0
    probe_timeout_s: float = 30.0


@dataclass
class ServeConfig:
    """What to serve (checkpoints, a training run to follow) and how (binding, resources, limits)."""

    checkpoint: str | None = None
    model_name: str | None = None                    # default: the checkpoint folder's name
    checkpoints: dict[str, str] | None = None        # more models: id -> dir
    follow: str | None = None                        # a training run_dir: serve its newest checkpoint live
    follow_name: str = "policy"
    follow_poll_s: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "eapo-llm"
    api_key: str | None = None                       # or env EAPO_API_KEY
    device: str = "cpu"                              # cpu | gpu
    replica_cpus: float = 0.5
    ingress_cpus: float = 0.25
    max_ongoing_requests: int = 64
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    engine: dict[str, Any] = field(default_factory=dict)  # vLLM AsyncEngineArgs, passed through

    def models(self) -> dict[str, str]:
        """Static models: id -> absolute checkpoint dir (``checkpoint`` plus ``checkpoints``)."""
        out = dict(self.checkpoints or {})
        if self.checkpoint:
            out[self.model_name or os.path.basename(os.path.normpath(self.checkpoint))] = self.checkpoint
        for name, path in out.items():
            if not os.path.isfile(os.path.join(str(path), "config.json")):
                raise ValueError(f"serve config: checkpoint for model {name!r} at {path!r} has no config.json")
        if self.follow and self.follow_name in out:
            raise ValueError(f"serve config: follow_name {self.follow_name!r} is also a checkpoint's model name")
        if not out and not self.follow:
            raise ValueError("serve config: set 'checkpoint=<dir>', '++checkpoints={id: dir}' or 'follow=<run_dir>'")
        return {k: os.path.abspath(v) for k, v in out.items()}

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("EAPO_API_KEY") or None

    def validate(self) -> "ServeConfig":
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"serve config: field 'device' must be 'cpu' or 'gpu', got {self.device!r}")
        for name, value in dataclasses.asdict(self.limits).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"serve config: field 'limits.{name}' must be a positive integer, got {value!r}")
        if self.health.probe_timeout_s <= 0 or self.health.period_s <= 0 or self.follow_poll_s <= 0:
            raise ValueError("serve config: fields 'health.*' and 'follow_poll_s' must be positive")
        return self


_SECTIONS = {"autoscaling": AutoscalingConfig, "limits": LimitsConfig, "health": HealthConfig}


def _build(cls, data: Mapping[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"serve config: unknown field(s) {unknown} in {where}")
    kwargs = {}
    for key, value in data.items():
        sub = _SECTIONS.get(key) if cls is ServeConfig else None
        kwargs[key] = _build(sub, value or {}, f"{where}.{key}") if sub else value
    return cls(**kwargs)


def to_serve_config(cfg: Any) -> ServeConfig:
    """A validated ``ServeConfig`` from a dataclass, dict or DictConfig."""
    if isinstance(cfg, ServeConfig):
        return cfg.validate()
    if not isinstance(cfg, Mapping) or type(cfg).__name__ == "DictConfig":
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return _build(ServeConfig, dict(cfg), "serve").validate()
