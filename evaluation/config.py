"""Typed configuration of an evaluation run (mirrors configs/eval/eval.yaml)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from evaluation.benchmarks import DEFAULT_PROMPT_TEMPLATE, REGISTRY

PAPER_K = {"aime24": 32, "aime25": 32, "amc23": 32, "math500": 4, "minerva_math": 4,
           "olympiadbench": 4, "gsm8k": 1}
PAPER_BENCHMARKS = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]


@dataclass
class EvalConfig:
    """Everything ``evaluation.runner.evaluate`` needs."""

    model: str
    endpoint: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    api: str = "chat"
    benchmarks: list[str] = field(default_factory=lambda: list(PAPER_BENCHMARKS))
    k: Any = field(default_factory=lambda: dict(PAPER_K))
    n: Any = None
    limit: Any = None  # None, an int for every benchmark, or a map benchmark -> int
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 3072
    seed: int = 0
    concurrency: int = 16
    max_retries: int = 5
    request_timeout_s: float = 600.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    data_dir: str | None = None
    output_dir: str | None = None
    cache_dir: str | None = None
    verifier_timeout_s: float = 4.0
    plot: bool = True

    def k_for(self, bench: str) -> int:
        """k of benchmark ``bench``."""
        return _per_benchmark(self.k, bench, "k", default=PAPER_K.get(bench, 1))

    def n_for(self, bench: str) -> int:
        """Samples per problem of ``bench`` (never below k)."""
        k = self.k_for(bench)
        n = k if self.n is None else _per_benchmark(self.n, bench, "n", default=k)
        if n < k:
            raise ValueError(f"eval config: n={n} < k={k} for benchmark {bench!r}")
        return n

    def limit_for(self, bench: str) -> int | None:
        """Number of problems of ``bench`` to evaluate (None = all)."""
        if self.limit is None or (isinstance(self.limit, Mapping) and self.limit.get(bench) is None):
            return None
        return _per_benchmark(self.limit, bench, "limit", default=0)

    def validate(self) -> "EvalConfig":
        """Raise ValueError naming the offending field."""
        if not self.model or self.model == "???":
            raise ValueError("eval config: field 'model' is required")
        if self.api not in ("chat", "completions"):
            raise ValueError(f"eval config: field 'api' must be 'chat' or 'completions', got {self.api!r}")
        unknown = [b for b in self.benchmarks if b not in REGISTRY]
        if unknown:
            raise ValueError(f"eval config: field 'benchmarks' has unknown {unknown}; known {sorted(REGISTRY)}")
        for b in self.benchmarks:
            if self.k_for(b) < 1:
                raise ValueError(f"eval config: field 'k' must be >= 1 for {b!r}")
            self.n_for(b)
        if self.concurrency < 1:
            raise ValueError("eval config: field 'concurrency' must be >= 1")
        return self


def _per_benchmark(value: Any, bench: str, name: str, default: int) -> int:
    if isinstance(value, Mapping):
        return int(value.get(bench, default))
    if isinstance(value, (int, str)):
        return int(value)
    raise ValueError(f"eval config: field {name!r} must be an int or a map benchmark -> int, got {value!r}")


def to_eval_config(cfg: Any) -> EvalConfig:
    """Build an ``EvalConfig`` from a dataclass, dict or OmegaConf DictConfig (unknown keys rejected)."""
    if isinstance(cfg, EvalConfig):
        return cfg.validate()
    if not isinstance(cfg, Mapping):
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(cfg, resolve=True)
    else:
        try:
            from omegaconf import DictConfig, OmegaConf
            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:
            pass
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"eval config: unknown field(s) {unknown}")
    return EvalConfig(**dict(cfg)).validate()
