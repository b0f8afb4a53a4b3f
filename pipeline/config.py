"""Typed configuration of a training run, built from the Hydra YAML in ``configs/``.

The YAML files are the only place defaults are written down (with their trade-offs); these
dataclasses give them types, and :func:`load` rejects unknown keys, wrong types and invalid
values with a message that names the field, before anything expensive starts.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from core.config import (Config, DataConfig, HeldoutConfig, ModelConfig, PeriodicEvalConfig,  # noqa: F401
                         RolloutConfig, TaskConfig, TrainerConfig, WarmStartConfig, shards_per_step)


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending field."""


def load(cfg: Any) -> Config:
    """Hydra ``DictConfig`` (or dict) -> validated :class:`Config`. Raises :class:`ConfigError`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    raw = {k: v for k, v in raw.items() if k not in ("hydra", "preset")}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        config: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"invalid configuration at '{key}': {err.msg if hasattr(err, 'msg') else err}") from None
    validate(config)
    return config


def _require(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid configuration at '{name}': {why}")


def validate(c: Config) -> None:
    """Check values the types cannot: sizes, ranges and the consistency between sections."""
    positive = {
        "rollout.n": c.rollout.n, "rollout.max_tokens": c.rollout.max_tokens,
        "rollout.num_actors": c.rollout.num_actors, "trainer.num_workers": c.trainer.num_workers,
        "trainer.prompts_per_step": c.trainer.prompts_per_step, "trainer.total_steps": c.trainer.total_steps,
        "trainer.mini_batches_per_step": c.trainer.mini_batches_per_step,
        "trainer.micro_batch_size": c.trainer.micro_batch_size, "trainer.epochs_per_step": c.trainer.epochs_per_step,
        "trainer.logprob_chunk_size": c.trainer.logprob_chunk_size, "trainer.save_every": c.trainer.save_every,
        "heldout.max_tokens": c.heldout.max_tokens, "task.num_train_prompts": c.task.num_train_prompts,
        "warm_start.batch_size": c.warm_start.batch_size,
    }
    for name, value in positive.items():
        _require(value > 0, name, f"must be > 0, got {value}")
    pe = c.periodic_eval
    _require(pe.every >= 0, "periodic_eval.every", "must be >= 0 (0 = off)")
    _require(1 <= pe.k <= pe.n, "periodic_eval.k", f"must be in [1, periodic_eval.n={pe.n}]")
    from evaluation.benchmarks import REGISTRY

    for name in pe.benchmarks:
        _require(name in REGISTRY, "periodic_eval.benchmarks", f"unknown benchmark {name!r}; known: {sorted(REGISTRY)}")
    _require(c.heldout.size >= 0, "heldout.size", f"must be >= 0, got {c.heldout.size}")
    _require(c.heldout.every >= 0, "heldout.every", f"must be >= 0 (0 = before/after only), got {c.heldout.every}")
    _require(c.warm_start.steps >= 0, "warm_start.steps", "must be >= 0")
    _require(0 <= c.warm_start.carry_noise <= 1, "warm_start.carry_noise", "must be in [0, 1]")
    _require(c.rollout.staleness >= 0, "rollout.staleness", f"must be >= 0, got {c.rollout.staleness}")
    _require(c.rollout.temperature > 0, "rollout.temperature", "must be > 0 (the loss divides logits by it)")
    _require(0 < c.rollout.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    _require(0 < c.rollout.stream_poll_s <= 1, "rollout.stream_poll_s", f"must be in (0, 1], got {c.rollout.stream_poll_s}")
    _require(c.trainer.zero_stage in (0, 1, 2, 3), "trainer.zero_stage", "must be 0, 1, 2 or 3")
    _require(c.trainer.lr > 0, "trainer.lr", "must be > 0")
    _require(c.trainer.is_correction in ("auto", True, False), "trainer.is_correction",
             f"must be auto, true or false, got {c.trainer.is_correction!r}")
    _require(c.trainer.is_cap > 0, "trainer.is_cap", f"must be > 0, got {c.trainer.is_cap}")
    _require(c.model.kind in ("tiny", "pretrained"), "model.kind", "must be 'tiny' or 'pretrained'")
    _require(c.model.kind == "tiny" or bool(c.model.path), "model.path", "required when model.kind=pretrained")
    _require(c.data.source in ("synthetic", "files"), "data.source", "must be 'synthetic' or 'files'")
    _require(c.data.source == "synthetic" or bool(c.data.path), "data.path", "required when data.source=files")
    _require(c.data.format in ("auto", "parquet", "jsonl"), "data.format", "must be auto, parquet or jsonl")
    _require(1 <= c.task.digits <= 9, "task.digits", f"must be in [1, 9], got {c.task.digits}")
    shards = shards_per_step(c)
    _require(c.trainer.prompts_per_step % shards == 0, "trainer.prompts_per_step",
             f"must be divisible by trainer.num_workers x shards per worker = {shards}")
    per_rank = c.trainer.prompts_per_step // c.trainer.num_workers * c.rollout.n
    _require(per_rank % c.trainer.mini_batches_per_step == 0, "trainer.mini_batches_per_step",
             f"must divide the {per_rank} responses each worker trains on per step")
    mini = per_rank // c.trainer.mini_batches_per_step
    _require(mini % min(c.trainer.micro_batch_size, mini) == 0, "trainer.micro_batch_size",
             f"must divide the mini-batch of {mini} responses per worker")
    _require(isinstance(c.algorithm, dict) and "name" in c.algorithm, "algorithm.name", "missing")
    from losses import build_algorithm

    try:
        algo = build_algorithm(c.algorithm)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"invalid configuration at 'algorithm': {err}") from None
    c.algorithm = dataclasses.asdict(algo.config)  # every key resolved (class < registry < YAML)
    _validate_algorithm_against_run(c, algo)


def _validate_algorithm_against_run(c: Config, algo) -> None:
    """Checks that need both the algorithm and the rest of the run's settings."""
    r = c.rollout
    if algo.requires_signed_rewards:
        _require(r.reward_wrong < 0 < r.reward_correct, "rollout.reward_wrong",
                 f"algorithm {algo.name!r} needs the +-1 reward convention (reward_wrong < 0 < reward_correct), "
                 f"got reward_correct={r.reward_correct}, reward_wrong={r.reward_wrong}")
    buffer = c.algorithm["overlong_buffer"]
    _require(buffer <= r.max_tokens, "algorithm.overlong_buffer",
             f"must be <= rollout.max_tokens={r.max_tokens}, got {buffer}")


def resolve_paths(c: Config) -> Config:
    c.run_dir = os.path.abspath(os.path.expanduser(c.run_dir))
    c.data_dir = os.path.abspath(os.path.expanduser(c.data_dir))
    c.model.cache_dir = os.path.abspath(os.path.expanduser(c.model.cache_dir))
    return c
