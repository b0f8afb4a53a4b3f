"""Typed configuration of a training run, built from the Hydra YAML in ``configs/``.

The YAML files are the only place values are written down (with their trade-offs); the dataclasses of
``core.config`` give them types, and :func:`load` rejects unknown, missing and mistyped keys, invalid
values and inconsistent combinations with a :class:`ConfigError` that names the key(s), before Ray,
vLLM or DeepSpeed start. ``auto`` settings (``model.dtype``, ``model.gradient_checkpointing``) are
resolved here, so the rest of the run reads concrete values.

Outside a Hydra app, :func:`compose` gives the same :class:`Config` as ``python -m pipeline.run <overrides>``.
"""
from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from core.config import Config, shards_per_step
from core.config_files import compose_option
from core.engine import engine_config, engines_on_cpu
from core.typed import ConfigError, build, require

__all__ = ["Config", "ConfigError", "compose", "load", "preset_overlong_buffer", "resolve_paths", "shards_per_step",
           "validate"]

#: Keys of the composed Hydra config that are not part of the run (Hydra's own, the preset selector).
NOT_RUN_KEYS = ("hydra", "preset")


def preset_overlong_buffer(algorithm: str, max_tokens: int, fraction: float) -> int:
    """``${eapo.overlong_buffer:${algorithm.name},${rollout.max_tokens},<fraction>}`` in a preset: DAPO's overlong
    buffer L_cache scaled to the run's response budget, ``int(fraction * max_tokens)`` (DAPO: 4096 of 20480 = 0.2),
    for an algorithm whose own file (``configs/algorithm/<name>.yaml``) has overlong shaping (overlong_buffer > 0);
    0 for one without it, so a preset does not add the shaping to a baseline (grpo). A command-line
    ``algorithm.overlong_buffer=...`` replaces the whole expression. An unknown name gives 0 (:func:`validate`
    names it)."""
    try:
        shaped = compose_option("algorithm", str(algorithm)).get("overlong_buffer", 0) > 0
    except FileNotFoundError:
        return 0
    return int(float(fraction) * int(max_tokens)) if shaped else 0


# Hydra composes the job's config after this module is imported (pipeline.run, pipeline.bench, compose below).
OmegaConf.register_new_resolver("eapo.overlong_buffer", preset_overlong_buffer, replace=True)


def _container(cfg: Any) -> dict:
    """Plain dict of a DictConfig (interpolations resolved) or a dict; a missing ``???`` value names its key."""
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(key, "must be set (the config gives it no value: ???)") from None


def load(cfg: Any) -> Config:
    """Hydra ``DictConfig`` (or dict) -> validated :class:`Config`. Raises :class:`ConfigError`."""
    raw = {k: v for k, v in _container(cfg).items() if k not in NOT_RUN_KEYS}
    config = build(Config, raw)
    validate(config)
    return config


def compose(*overrides: str) -> Config:
    """The validated :class:`Config` of ``python -m pipeline.run <overrides>``, composed with Hydra's
    compose API (tests, notebooks; not inside a running Hydra app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="configs", version_base=None):
        return load(hydra_compose(config_name="config", overrides=list(overrides)))


def gpus_available() -> bool:
    """True when this machine has a CUDA device (``torch.cuda.is_available()``)."""
    import torch

    return torch.cuda.is_available()


def _on_cluster(c: Config) -> bool:
    """A Ray cluster is given: its nodes, not this machine, decide which resources exist."""
    return bool(c.ray_address or os.environ.get("RAY_ADDRESS"))


def validate(c: Config) -> None:
    """Check values the types cannot: sizes, ranges and the consistency between sections; resolve ``auto``."""
    _validate_sizes(c)
    _validate_model(c)
    _validate_data(c)
    _validate_rollout(c)
    _validate_trainer(c)
    _validate_periodic_eval(c)
    from losses import build_algorithm

    if not isinstance(c.algorithm, dict):
        raise ConfigError("algorithm", f"expected a mapping, got {c.algorithm!r}")
    try:
        algo = build_algorithm(c.algorithm)
    except ConfigError as err:
        raise err.under("algorithm") from None
    c.algorithm = algo.config  # every key resolved (the algorithm's YAML < the given mapping)
    _validate_algorithm_against_run(c, algo)


def _validate_sizes(c: Config) -> None:
    positive = {
        "rollout.n": c.rollout.n, "rollout.max_tokens": c.rollout.max_tokens,
        "rollout.num_actors": c.rollout.num_actors, "trainer.num_workers": c.trainer.num_workers,
        "trainer.prompts_per_step": c.trainer.prompts_per_step, "trainer.total_steps": c.trainer.total_steps,
        "trainer.mini_batches_per_step": c.trainer.mini_batches_per_step,
        "trainer.micro_batch_size": c.trainer.micro_batch_size, "trainer.epochs_per_step": c.trainer.epochs_per_step,
        "trainer.logprob_chunk_size": c.trainer.logprob_chunk_size, "trainer.save_every": c.trainer.save_every,
        "trainer.keep_checkpoints": c.trainer.keep_checkpoints, "trainer.cpus_per_worker": c.trainer.cpus_per_worker,
        "trainer.grad_clip": c.trainer.grad_clip, "trainer.grad_check_rows": c.trainer.grad_check_rows,
        "trainer.lr": c.trainer.lr, "trainer.is_cap": c.trainer.is_cap,
        "heldout.max_tokens": c.heldout.max_tokens, "task.num_train_prompts": c.task.num_train_prompts,
        "warm_start.batch_size": c.warm_start.batch_size, "warm_start.lr": c.warm_start.lr,
        "warm_start.num_examples": c.warm_start.num_examples, "data.max_prompt_tokens": c.data.max_prompt_tokens,
        "rollout.max_model_len": c.rollout.max_model_len, "rollout.verifier_timeout_s": c.rollout.verifier_timeout_s,
        "rollout.max_num_batched_tokens": c.rollout.max_num_batched_tokens, "rollout.kv_cache_gb": c.rollout.kv_cache_gb,
        "rollout.weight_timeout_s": c.rollout.weight_timeout_s, "trainer.data_timeout_s": c.trainer.data_timeout_s,
        "ray_resource_wait_s": c.ray_resource_wait_s,
    }
    for name, value in positive.items():
        require(value > 0, name, f"must be > 0, got {value}")
    non_negative = {
        "seed": c.seed, "heldout.size": c.heldout.size, "heldout.every": c.heldout.every,
        "heldout.sample_k": c.heldout.sample_k,
        "trainer.max_failures": c.trainer.max_failures, "trainer.hang_timeout_s": c.trainer.hang_timeout_s,
        "trainer.grad_check_every": c.trainer.grad_check_every,
        "warm_start.steps": c.warm_start.steps, "rollout.staleness": c.rollout.staleness,
        "rollout.cpus_per_actor": c.rollout.cpus_per_actor, "rollout.gpus_per_actor": c.rollout.gpus_per_actor,
        "trainer.weight_decay": c.trainer.weight_decay,
    }
    for name, value in non_negative.items():
        require(value >= 0, name, f"must be >= 0, got {value}")
    require(bool(c.run_dir), "run_dir", "must not be empty")
    require(0 <= c.warm_start.carry_noise <= 1, "warm_start.carry_noise", "must be in [0, 1]")
    require(0 <= c.warm_start.fact_noise <= 1, "warm_start.fact_noise", "must be in [0, 1]")
    require(0 <= c.warm_start.free_letters <= 8, "warm_start.free_letters", f"must be in [0, 8], got {c.warm_start.free_letters}")
    require(2 <= c.warm_start.free_alphabet <= 26, "warm_start.free_alphabet",
            f"must be in [2, 26] (letters a..z), got {c.warm_start.free_alphabet}")
    require(1 <= c.task.digits <= 9, "task.digits", f"must be in [1, 9], got {c.task.digits}")
    require(0 < c.task.heldout_fraction < 1, "task.heldout_fraction", f"must be in (0, 1), got {c.task.heldout_fraction}")


def _validate_model(c: Config) -> None:
    m = c.model
    require(m.kind in ("tiny", "pretrained"), "model.kind", f"must be 'tiny' or 'pretrained', got {m.kind!r}")
    require(m.dtype in ("auto", "float32", "bfloat16"), "model.dtype",
            f"must be auto, float32 or bfloat16, got {m.dtype!r}")
    require(m.gradient_checkpointing in ("auto", True, False), "model.gradient_checkpointing",
            f"must be auto, true or false, got {m.gradient_checkpointing!r}")
    if m.kind == "tiny":
        require(not m.path, "model.path", f"is set ({m.path!r}) but model.kind=tiny never reads it: select the "
                                          "checkpoint with model=pretrained model.path=<dir>")
        require(m.tiny is not None, "model.tiny", "required when model.kind=tiny (configs/model/tiny.yaml)")
        t = m.tiny
        for key, value in vars(t).items():
            require(value > 0, f"model.tiny.{key}", f"must be > 0, got {value}")
        require(t.hidden_size % t.num_heads == 0, "model.tiny.num_heads",
                f"must divide model.tiny.hidden_size={t.hidden_size}")
        require(t.num_heads % t.num_kv_heads == 0, "model.tiny.num_kv_heads",
                f"must divide model.tiny.num_heads={t.num_heads}")
        require(c.rollout.max_model_len <= t.max_position_embeddings, "rollout.max_model_len",
                f"{c.rollout.max_model_len} exceeds model.tiny.max_position_embeddings={t.max_position_embeddings}")
    else:
        require(bool(m.path), "model.path", "required when model.kind=pretrained")
        require(m.tiny is None, "model.tiny", "only for model.kind=tiny (a checkpoint's config.json gives its size)")
    if m.dtype == "auto":
        m.dtype = "bfloat16" if c.trainer.use_gpu else "float32"
    if m.gradient_checkpointing == "auto":
        m.gradient_checkpointing = c.trainer.use_gpu


def _validate_data(c: Config) -> None:
    d, h = c.data, c.heldout
    require(d.source in ("synthetic", "files"), "data.source", f"must be 'synthetic' or 'files', got {d.source!r}")
    require(d.format in ("auto", "parquet", "jsonl"), "data.format", f"must be auto, parquet or jsonl, got {d.format!r}")
    require(bool(d.prompt_key), "data.prompt_key", "must not be empty")
    require(bool(d.answer_key), "data.answer_key", "must not be empty")
    if d.source == "synthetic":
        require(d.format in ("auto", "parquet"), "data.format", f"the synthetic prompts are parquet, got {d.format!r}")
        require(not d.path, "data.path", f"is set ({d.path!r}) but data.source=synthetic never reads it: select "
                                         "the file with data=math_train (or data.source=files) data.path=<uri>")
        require(not h.path, "heldout.path", f"is set ({h.path!r}) but data.source=synthetic draws its own "
                                            "held-out problems: set it only with data.source=files")
    else:
        require(bool(d.path), "data.path", "required when data.source=files")
        require(h.size == 0 or bool(h.path), "heldout.path",
                f"required when data.source=files and heldout.size={h.size} > 0 (a file with the training "
                "data's columns, never trained on); or set heldout.size=0 for no held-out accuracy")


def _validate_rollout(c: Config) -> None:
    r = c.rollout
    require(r.temperature > 0, "rollout.temperature", "must be > 0 (the loss divides logits by it)")
    require(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    require(0 < r.stream_poll_s <= 1, "rollout.stream_poll_s", f"must be in (0, 1], got {r.stream_poll_s}")
    require(r.reward_correct > r.reward_wrong, "rollout.reward_correct",
            f"must be > rollout.reward_wrong (got {r.reward_correct} <= {r.reward_wrong}): otherwise RL learns wrong answers")
    needs = {"rollout.max_tokens": r.max_tokens}
    if c.heldout.size > 0:
        needs["heldout.max_tokens"] = c.heldout.max_tokens
    key = max(needs, key=needs.get)
    require(c.data.max_prompt_tokens + needs[key] <= r.max_model_len, key,
            f"data.max_prompt_tokens={c.data.max_prompt_tokens} + {key}={needs[key]} exceeds "
            f"rollout.max_model_len={r.max_model_len}: a long prompt would crash the engine mid-run")
    engine_config(c).check("rollout", engines_on_cpu(c))
    _validate_weight_transfer(c)
    if r.gpus_per_actor > 0 and not _on_cluster(c):
        require(gpus_available(), "rollout.gpus_per_actor",
                f"{r.gpus_per_actor} > 0 but this machine has no GPU and no Ray cluster is given "
                "(ray_address / RAY_ADDRESS): Ray would wait for it forever")


#: ``rollout.weight_transfer`` backends: the wired one, and vLLM's GPU backends the config knows but refuses.
WEIGHT_TRANSFER = "object_store"
GPU_WEIGHT_TRANSFER = ("nccl", "ipc")


def _validate_weight_transfer(c: Config) -> None:
    key, backend = "rollout.weight_transfer", c.rollout.weight_transfer
    known = (WEIGHT_TRANSFER, *GPU_WEIGHT_TRANSFER)
    require(backend in known, key, f"must be one of {', '.join(known)}, got {backend!r}")
    if backend == WEIGHT_TRANSFER:
        return
    require(_on_cluster(c) or gpus_available(), key,
            f"{backend} is a GPU backend of vLLM's weight transfer and this machine has no GPU (and no Ray cluster "
            "is given: ray_address / RAY_ADDRESS); use object_store")
    require(c.trainer.use_gpu and c.rollout.gpus_per_actor > 0, key,
            f"{backend} is a GPU backend of vLLM's weight transfer: it needs trainer.use_gpu=true and "
            f"rollout.gpus_per_actor > 0 (got {c.trainer.use_gpu}, {c.rollout.gpus_per_actor}); use object_store")
    raise ConfigError(key, f"{backend}: vLLM pushes each update to every engine at once, and the rollout actor pool "
                           "pulls the version each shard needs (actors.weight_transfer): not wired yet; use object_store")


def _validate_trainer(c: Config) -> None:
    t = c.trainer
    require(t.zero_stage in (0, 1, 2, 3), "trainer.zero_stage", f"must be 0, 1, 2 or 3, got {t.zero_stage}")
    require(t.is_correction in ("auto", True, False), "trainer.is_correction",
            f"must be auto, true or false, got {t.is_correction!r}")
    if t.use_gpu and not _on_cluster(c):
        require(gpus_available(), "trainer.use_gpu", "true but this machine has no GPU (torch.cuda.is_available() "
                                                     "is false) and no Ray cluster is given (ray_address / RAY_ADDRESS)")
    shards = shards_per_step(c)
    require(t.prompts_per_step % shards == 0, "trainer.prompts_per_step",
            f"must be divisible by trainer.num_workers x shards per worker = {shards}")
    per_rank = t.prompts_per_step // t.num_workers * c.rollout.n
    require(per_rank % t.mini_batches_per_step == 0, "trainer.mini_batches_per_step",
            f"must divide the {per_rank} responses each worker trains on per step")
    require(not (t.grad_check_every and t.zero_stage == 3), "trainer.grad_check_every",
            f"{t.grad_check_every} needs the full parameters on every rank: set it to 0 with trainer.zero_stage=3")
    mini = per_rank // t.mini_batches_per_step
    require(mini % min(t.micro_batch_size, mini) == 0, "trainer.micro_batch_size",
            f"must divide the mini-batch of {mini} responses per worker")


def _validate_periodic_eval(c: Config) -> None:
    pe = c.periodic_eval
    require(pe.every >= 0, "periodic_eval.every", f"must be >= 0 (0 = off), got {pe.every}")
    require(pe.every % c.trainer.save_every == 0, "periodic_eval.every",
            f"{pe.every} must be a multiple of trainer.save_every={c.trainer.save_every}: only checkpoints are evaluated")
    require(pe.n >= 1, "periodic_eval.n", f"must be >= 1, got {pe.n}")
    require(1 <= pe.k <= pe.n, "periodic_eval.k", f"must be in [1, periodic_eval.n={pe.n}]")
    require(pe.limit is None or pe.limit > 0, "periodic_eval.limit", f"must be > 0 or null (all), got {pe.limit}")
    require(pe.temperature >= 0, "periodic_eval.temperature", f"must be >= 0, got {pe.temperature}")
    require(0 < pe.top_p <= 1, "periodic_eval.top_p", f"must be in (0, 1], got {pe.top_p}")
    require(pe.max_tokens > 0, "periodic_eval.max_tokens", f"must be > 0, got {pe.max_tokens}")
    require(pe.cpus >= 0, "periodic_eval.cpus", f"must be >= 0, got {pe.cpus}")
    require(bool(pe.benchmarks), "periodic_eval.benchmarks", "must name at least one benchmark")
    from evaluation.benchmarks import REGISTRY

    for name in pe.benchmarks:
        require(name in REGISTRY, "periodic_eval.benchmarks", f"unknown benchmark {name!r}; known: {REGISTRY.names()}")


def _validate_algorithm_against_run(c: Config, algo) -> None:
    """Checks that need both the algorithm and the rest of the run's settings."""
    from losses.advantages import GROUP_RELATIVE_ESTIMATORS

    r, a = c.rollout, c.algorithm
    if algo.requires_signed_rewards:
        require(r.reward_wrong < 0 < r.reward_correct, "rollout.reward_wrong",
                f"algorithm {algo.name!r} needs the +-1 reward convention (reward_wrong < 0 < reward_correct), "
                f"got reward_correct={r.reward_correct}, reward_wrong={r.reward_wrong}")
    require(a.overlong_buffer <= r.max_tokens, "algorithm.overlong_buffer",
            f"must be <= rollout.max_tokens={r.max_tokens}, got {a.overlong_buffer}")
    require(r.n >= 2 or a.advantage_estimator not in GROUP_RELATIVE_ESTIMATORS, "rollout.n",
            f"must be >= 2 for algorithm.advantage_estimator={a.advantage_estimator!r}: a group of one response "
            "has advantage 0 and the run would learn nothing")
    require(a.kl_coef == 0 or c.trainer.zero_stage < 3, "algorithm.kl_coef",
            f"{a.kl_coef} > 0 needs a reference-policy forward, implemented for trainer.zero_stage 0-2 "
            f"(got trainer.zero_stage={c.trainer.zero_stage})")


def resolve_paths(c: Config) -> Config:
    c.run_dir = os.path.abspath(os.path.expanduser(c.run_dir))
    c.data_dir = os.path.abspath(os.path.expanduser(c.data_dir))
    c.model.cache_dir = os.path.abspath(os.path.expanduser(c.model.cache_dir))
    return c
