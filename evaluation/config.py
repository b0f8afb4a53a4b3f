"""Typed configuration of an evaluation run. Values: configs/eval/eval.yaml (the only place they are written).

``to_eval_config`` builds an :class:`EvalConfig` from a mapping that gives only the keys to change
(``{"model": "policy"}``): they are merged over eval.yaml's values (maps such as ``k`` key by key), as
Hydra does for ``python -m evaluation.run model=policy``. Unknown keys, wrong types and invalid values
raise ``core.typed.ConfigError`` (a ``ValueError``) naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from core.config_files import merge, read_file
from core.typed import ConfigError, build, plain, require
from evaluation.benchmarks import REGISTRY

PAPER_BENCHMARKS = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]


@dataclass
class EvalConfig:
    """Everything ``evaluation.runner.evaluate`` needs (each key documented in configs/eval/eval.yaml).

    k, n, limit: an int for every benchmark or a map benchmark -> int (n, limit: also null).
    """

    endpoint: str
    model: str
    api_key: Optional[str]
    api: str
    benchmarks: list[str]
    k: Any
    n: Any
    limit: Any
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    concurrency: int
    retry_for_s: float
    request_timeout_s: float
    prompt_template: str
    data_dir: Optional[str]
    output_dir: Optional[str]
    cache_dir: Optional[str]
    verifier_timeout_s: float
    plot: bool

    def k_for(self, bench: str) -> int:
        """k of benchmark ``bench``."""
        return _per_benchmark(self.k, bench, "k", default=1)

    def n_for(self, bench: str) -> int:
        """Samples per problem of ``bench`` (never below k)."""
        k = self.k_for(bench)
        n = k if self.n is None else _per_benchmark(self.n, bench, "n", default=k)
        require(n >= k, "n", f"n={n} < k={k} for benchmark {bench!r}")
        return n

    def limit_for(self, bench: str) -> int | None:
        """Number of problems of ``bench`` to evaluate (None = all)."""
        if self.limit is None or (isinstance(self.limit, Mapping) and self.limit.get(bench) is None):
            return None
        return _per_benchmark(self.limit, bench, "limit", default=0)

    def validate(self) -> "EvalConfig":
        """Raise ``ConfigError`` naming the offending key."""
        require(bool(self.model) and self.model != "???", "model", "is required (the request's `model` field)")
        require(self.api in ("chat", "completions"), "api", f"must be 'chat' or 'completions', got {self.api!r}")
        unknown = [b for b in self.benchmarks if b not in REGISTRY]
        require(not unknown, "benchmarks", f"unknown {unknown}; known {REGISTRY.names()}")
        for b in self.benchmarks:
            require(self.k_for(b) >= 1, "k", f"must be >= 1 for {b!r}")
            self.n_for(b)
        for b in self.benchmarks:
            limit = self.limit_for(b)
            require(limit is None or limit > 0, "limit", f"must be > 0 or null (all) for {b!r}, got {limit}")
        require("{question}" in self.prompt_template, "prompt_template",
                "must contain {question} (where the problem goes)")
        require(bool(self.endpoint), "endpoint", "must not be empty")
        require(self.concurrency >= 1, "concurrency", f"must be >= 1, got {self.concurrency}")
        require(self.retry_for_s >= 0, "retry_for_s", f"must be >= 0 (0: no retries), got {self.retry_for_s}")
        require(self.max_tokens > 0, "max_tokens", f"must be > 0, got {self.max_tokens}")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.request_timeout_s > 0, "request_timeout_s", f"must be > 0, got {self.request_timeout_s}")
        require(self.verifier_timeout_s > 0, "verifier_timeout_s", f"must be > 0, got {self.verifier_timeout_s}")
        return self


def _per_benchmark(value: Any, bench: str, name: str, default: int) -> int:
    if isinstance(value, Mapping):
        value = value.get(bench, default)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(name, f"must be an int or a map benchmark -> int, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(name, f"must be an int or a map benchmark -> int, got {value!r}") from None


def eval_defaults() -> dict:
    """The values of configs/eval/eval.yaml (without its Hydra sections)."""
    return read_file("eval/eval.yaml")


def to_eval_config(cfg: Any) -> EvalConfig:
    """A validated ``EvalConfig`` from an ``EvalConfig``, or from a dict / DictConfig of the keys to change
    (merged over configs/eval/eval.yaml)."""
    if isinstance(cfg, EvalConfig):
        return cfg.validate()
    given = plain(cfg)
    if not isinstance(given, Mapping):
        raise ConfigError("eval", f"expected a mapping of eval.yaml keys, got {type(cfg).__name__}")
    return build(EvalConfig, merge(eval_defaults(), given)).validate()
