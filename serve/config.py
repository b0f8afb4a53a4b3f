"""Typed configuration of the server. Values: configs/serve/serve.yaml (the only place they are written).

``to_serve_config`` builds a :class:`ServeConfig` from a mapping of the keys to change, merged over
serve.yaml's values (sections key by key), as Hydra does for ``python -m serve.run``. Unknown keys, wrong
types and invalid values raise ``core.typed.ConfigError`` (a ``ValueError``) naming the key. The engine
section is the project's one engine-config type, ``core.engine.EngineConfig`` (KV cache in GiB).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from core.config_files import merge, read_file
from core.engine import EngineConfig
from core.typed import ConfigError, build, plain, require

#: serve.yaml keys read by ``python -m serve.run`` itself, not part of the app's config
RUN_ONLY_KEYS = ("ray_address", "blocking")


@dataclass
class AutoscalingConfig:
    """Replicas per model (Ray Serve ``autoscaling_config``)."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float


@dataclass
class LimitsConfig:
    """What one request may ask for; larger requests get a 4xx before any work (max_sequences: prompts x n)."""

    max_body_bytes: int
    max_sequences: int
    max_tokens: int


@dataclass
class HealthConfig:
    """Serve replaces a replica whose engine is dead or does not answer within ``probe_timeout_s``."""

    period_s: float
    probe_timeout_s: float


@dataclass
class ServeConfig:
    """What to serve (checkpoints, a training run to follow) and how (binding, resources, limits, engine);
    each key documented in configs/serve/serve.yaml."""

    checkpoint: Optional[str]
    model_name: Optional[str]
    checkpoints: Optional[dict[str, str]]
    follow: Optional[str]
    follow_name: str
    follow_poll_s: float
    host: str
    port: int
    app_name: str
    api_key: Optional[str]
    device: str
    replica_cpus: float
    ingress_cpus: float
    max_ongoing_requests: int
    autoscaling: AutoscalingConfig
    limits: LimitsConfig
    health: HealthConfig
    engine: EngineConfig

    def models(self) -> dict[str, str]:
        """Static models: id -> absolute checkpoint dir (``checkpoint`` plus ``checkpoints``)."""
        out = dict(self.checkpoints or {})
        if self.checkpoint:
            out[self.model_name or os.path.basename(os.path.normpath(self.checkpoint))] = self.checkpoint
        for name, path in out.items():
            require(os.path.isfile(os.path.join(str(path), "config.json")), "checkpoint" if self.checkpoint else
                    "checkpoints", f"the checkpoint for model {name!r} at {path!r} has no config.json")
        require(not (self.follow and self.follow_name in out), "follow_name",
                f"{self.follow_name!r} is also a checkpoint's model name")
        require(bool(out or self.follow), "checkpoint",
                "nothing to serve: set 'checkpoint=<dir>', '++checkpoints={id: dir}' or 'follow=<run_dir>'")
        return {k: os.path.abspath(v) for k, v in out.items()}

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("EAPO_API_KEY") or None

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def validate(self) -> "ServeConfig":
        """Raise ``ConfigError`` naming the offending key."""
        require(self.device in ("cpu", "gpu"), "device", f"must be 'cpu' or 'gpu', got {self.device!r}")
        for name, value in vars(self.limits).items():
            require(value >= 1, f"limits.{name}", f"must be a positive integer, got {value!r}")
        for name, value in {"health.period_s": self.health.period_s, "follow_poll_s": self.follow_poll_s,
                            "health.probe_timeout_s": self.health.probe_timeout_s, "replica_cpus": self.replica_cpus,
                            "max_ongoing_requests": self.max_ongoing_requests}.items():
            require(value > 0, name, f"must be > 0, got {value}")
        require(self.ingress_cpus >= 0, "ingress_cpus", f"must be >= 0, got {self.ingress_cpus}")
        for name in ("follow_name", "host", "app_name"):
            require(bool(getattr(self, name)), name, "must not be empty")
        require(1 <= self.port <= 65535, "port", f"must be in [1, 65535], got {self.port}")
        a = self.autoscaling
        require(1 <= a.min_replicas <= a.max_replicas, "autoscaling.min_replicas",
                f"must be in [1, autoscaling.max_replicas={a.max_replicas}], got {a.min_replicas}")
        require(a.target_ongoing_requests > 0, "autoscaling.target_ongoing_requests", "must be > 0")
        self.engine.check("engine", self.on_cpu)
        return self


def serve_defaults() -> dict:
    """The app's values from configs/serve/serve.yaml (without its Hydra sections and run-only keys)."""
    values = read_file("serve/serve.yaml")
    for key in RUN_ONLY_KEYS:
        values.pop(key, None)
    return values


def to_serve_config(cfg: Any) -> ServeConfig:
    """A validated ``ServeConfig`` from a ``ServeConfig``, or from a dict / DictConfig of the keys to change
    (merged over configs/serve/serve.yaml)."""
    if isinstance(cfg, ServeConfig):
        return cfg.validate()
    given = plain(cfg)
    if not isinstance(given, Mapping):
        raise ConfigError("serve", f"expected a mapping of serve.yaml keys, got {type(cfg).__name__}")
    return build(ServeConfig, merge(serve_defaults(), given)).validate()
