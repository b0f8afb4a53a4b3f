"""Typed configuration of a training run: the types the rooms share. Values come from ``configs/`` only.

Every field is documented, with its default and trade-off, where its value is written: the YAML of its
config group (``configs/config.yaml``, ``configs/model/``, ``configs/data/``, ``configs/rollout/``,
``configs/trainer/``, ``configs/algorithm/``). These dataclasses carry types and no values: a key missing
from the YAML is an error (``core.typed.build``), so no default can be written twice.
``pipeline.config.load`` builds a :class:`Config` from the composed Hydra YAML and validates it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class TinyModelConfig:
    """Size of the tiny Qwen2-architecture policy (``model.tiny``; values: configs/model/tiny.yaml)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int


@dataclass
class ModelConfig:
    """``model.*``: kind tiny|pretrained, path (pretrained checkpoint), dtype (auto|float32|bfloat16;
    auto = float32 without GPUs, bfloat16 with), cache_dir, tiny (the tiny spec; null for pretrained),
    gradient_checkpointing (auto|true|false; auto = on with GPUs)."""

    kind: str
    path: Optional[str]
    dtype: str
    cache_dir: str
    tiny: Optional[TinyModelConfig]
    gradient_checkpointing: Any


@dataclass
class TaskConfig:
    """``task.*``: the synthetic addition task of the embedded default."""

    digits: int
    heldout_fraction: float
    num_train_prompts: int


@dataclass
class WarmStartConfig:
    """``warm_start.*``: the supervised warm start of the tiny policy."""

    steps: int
    batch_size: int
    lr: float
    num_examples: int
    carry_noise: float
    fact_noise: float
    free_letters: int
    free_alphabet: int


@dataclass
class DataConfig:
    """``data.*``: the training prompts (synthetic or files) and how to read them."""

    source: str
    path: Optional[str]
    format: str
    prompt_key: str
    answer_key: str
    prompt_suffix: str
    max_prompt_tokens: int
    shuffle: bool


@dataclass
class RolloutConfig:
    """``rollout.*``: the vLLM rollout actor pool, sampling and scoring (KV cache in GiB: ``kv_cache_gb``)."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    num_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    staleness: int
    kv_cache_gb: float
    enforce_eager: bool
    max_model_len: int
    max_num_batched_tokens: int
    reward_correct: float
    reward_wrong: float
    verifier_timeout_s: float
    stream_poll_s: float
    weight_timeout_s: float
    weight_transfer: str


@dataclass
class TrainerConfig:
    """``trainer.*``: the Ray Train worker group and the DeepSpeed optimisation."""

    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    zero_stage: int
    lr: float
    weight_decay: float
    grad_clip: float
    prompts_per_step: int
    mini_batches_per_step: int
    micro_batch_size: int
    epochs_per_step: int
    total_steps: int
    logprob_chunk_size: int
    save_every: int
    keep_checkpoints: int
    checkpoint_checksums: bool
    is_correction: Any
    is_cap: float
    max_failures: int
    data_timeout_s: float
    hang_timeout_s: float
    grad_check_every: int
    grad_check_rows: int


@dataclass
class HeldoutConfig:
    """``heldout.*``: greedy held-out accuracy (synthetic problems, or ``path`` for file data)."""

    size: int
    max_tokens: int
    every: int
    sample_k: int
    path: Optional[str]


@dataclass
class PeriodicEvalConfig:
    """``periodic_eval.*``: benchmark evaluation of checkpoints during training."""

    every: int
    benchmarks: list[str]
    k: int
    n: int
    limit: Optional[int]
    temperature: float
    top_p: float
    max_tokens: int
    cpus: float


@dataclass
class Config:
    """The whole run. ``algorithm`` is the YAML mapping when built, the validated
    ``losses.config.AlgorithmConfig`` (every key resolved) after ``pipeline.config.validate``."""

    run_dir: str
    seed: int
    data_dir: str
    ray_address: Optional[str]
    ray_autoscaling: bool
    ray_resource_wait_s: float
    model: ModelConfig
    task: TaskConfig
    warm_start: WarmStartConfig
    data: DataConfig
    rollout: RolloutConfig
    trainer: TrainerConfig
    heldout: HeldoutConfig
    periodic_eval: PeriodicEvalConfig
    algorithm: Any


def shards_per_step(c: Config) -> int:
    """Rollout shards per step: each train worker takes ``ceil(actors / workers)`` shards a step."""
    per_worker = -(-c.rollout.num_actors // c.trainer.num_workers)
    return per_worker * c.trainer.num_workers
