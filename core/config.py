"""Typed configuration of a training run: the types the rooms share (values come from ``configs/``).

``pipeline.config.load`` builds a :class:`Config` from the composed Hydra YAML and validates it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ModelConfig:
    kind: str = "tiny"
    path: Optional[str] = None
    dtype: str = "float32"
    cache_dir: str = "~/.cache/eapo"
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    gradient_checkpointing: bool = False


@dataclass
class TaskConfig:
    digits: int = 3
    heldout_fraction: float = 0.1
    num_train_prompts: int = 4096


@dataclass
class WarmStartConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3.0e-3
    num_examples: int = 4000
    carry_noise: float = 0.7


@dataclass
class DataConfig:
    source: str = "synthetic"
    path: Optional[str] = None
    format: str = "auto"
    prompt_key: str = "prompt"
    answer_key: str = "reward_model.ground_truth"
    prompt_suffix: str = ""
    max_prompt_tokens: int = 128
    shuffle: bool = True


@dataclass
class RolloutConfig:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 32
    num_actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    staleness: int = 0
    kv_cache_mb: int = 256
    enforce_eager: bool = True
    max_model_len: int = 256
    max_num_batched_tokens: int = 8192
    reward_correct: float = 1.0
    reward_wrong: float = 0.0
    verifier_timeout_s: float = 5.0
    stream_poll_s: float = 0.02


@dataclass
class TrainerConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    zero_stage: int = 0
    lr: float = 1.0e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    prompts_per_step: int = 16
    mini_batches_per_step: int = 1
    micro_batch_size: int = 64
    epochs_per_step: int = 1
    total_steps: int = 60
    logprob_chunk_size: int = 1024
    save_every: int = 20
    keep_checkpoints: int = 2
    is_correction: Any = "auto"
    is_cap: float = 2.0


@dataclass
class HeldoutConfig:
    size: int = 256
    max_tokens: int = 32
    every: int = 10


@dataclass
class PeriodicEvalConfig:
    every: int = 0
    benchmarks: list = field(default_factory=lambda: ["math500"])
    k: int = 1
    n: int = 1
    limit: Optional[int] = 64
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512
    cpus: float = 0.0


@dataclass
class Config:
    run_dir: str = "runs/default"
    seed: int = 0
    data_dir: str = "../shared/data"
    ray_address: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    periodic_eval: PeriodicEvalConfig = field(default_factory=PeriodicEvalConfig)
    algorithm: dict = field(default_factory=lambda: {"name": "eapo"})


def shards_per_step(c: Config) -> int:
    """Rollout shards per step: each train worker takes ``ceil(actors / workers)`` shards a step."""
    per_worker = -(-c.rollout.num_actors // c.trainer.num_workers)
    return per_worker * c.trainer.num_workers
