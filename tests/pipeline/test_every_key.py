"""Every key of every config group of the training job works or is rejected before Ray starts.

For every leaf key of every group option (``model=tiny|pretrained``, ``data=synthetic|math_train``,
``algorithm=<each>``, ``rollout``, ``trainer`` and the main config's own sections):

(a) an invalid value is rejected by ``pipeline.config.load`` with a ``ConfigError`` whose message names the
    key (``INVALID``; keys any string is valid for take a value of the wrong type, ``FREE_FORM``);
(b) the key is read by the code: ``CONSUMERS`` maps it to the function the pipeline calls to turn the config
    into what a stage does (the rollout request, the engine, the DeepSpeed config, the loss...), and changing
    the key (to ``ALTERNATIVE``, with ``CONTEXT`` where a key only acts together with another) changes that
    function's output. Pairs that cannot act are listed in ``INERT`` with the reason.

A new key fails this test until it has an invalid value and a consumer.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from core.config_files import options
from core.typed import ConfigError
from pipeline import config as C

ALGORITHMS = [a for a in options("algorithm") if a != "base"]
FILES = ["data=math_train", "data.path=/data/train.parquet", "heldout.path=/data/heldout.parquet",
         "rollout.max_model_len=2048", "model.tiny.max_position_embeddings=2048"]
OPTIONS = {  # group option -> overrides that select it (and make the rest of the run consistent with it)
    "main": [],
    "model=pretrained": ["model=pretrained", "model.path=/models/x"],
    "data=math_train": FILES,
    **{f"algorithm={a}": [f"algorithm={a}"] for a in ALGORITHMS},
}
OWN_KEYS = {  # which leaves each option owns (the main option: everything but model/data/algorithm options')
    "main": lambda key: True,
    "model=pretrained": lambda key: key.startswith("model."),
    "data=math_train": lambda key: key.startswith("data.") or key == "heldout.path",
    **{f"algorithm={a}": (lambda key: key.startswith("algorithm.")) for a in ALGORITHMS},
}

# ---- (a) invalid values ------------------------------------------------------------------------------------
FREE_FORM = {"data_dir", "ray_address", "model.cache_dir", "data.prompt_suffix", "algorithm.clip_cov_lb"}
WRONG_TYPE = "[1,2]"
INVALID = {
    "run_dir": "''", "seed": "-1", "ray_autoscaling": "yes", "ray_resource_wait_s": "0",
    "task.digits": "0", "task.heldout_fraction": "1.5", "task.num_train_prompts": "0",
    "warm_start.steps": "-1", "warm_start.batch_size": "0", "warm_start.lr": "0", "warm_start.num_examples": "0",
    "warm_start.carry_noise": "2", "warm_start.fact_noise": "-0.1",
    "warm_start.free_letters": "9", "warm_start.free_alphabet": "27",
    "heldout.size": "-1", "heldout.max_tokens": "0", "heldout.every": "-1", "heldout.sample_k": "-1",
    "periodic_eval.every": "-1", "periodic_eval.benchmarks": "[nope]", "periodic_eval.k": "0",
    "periodic_eval.n": "0", "periodic_eval.limit": "0", "periodic_eval.temperature": "-1",
    "periodic_eval.top_p": "0", "periodic_eval.max_tokens": "0", "periodic_eval.cpus": "-1",
    "model.kind": "huge", "model.dtype": "float16", "model.gradient_checkpointing": "sometimes",
    "model.tiny.vocab_size": "0", "model.tiny.hidden_size": "0", "model.tiny.num_layers": "0",
    "model.tiny.num_heads": "3", "model.tiny.num_kv_heads": "0", "model.tiny.intermediate_size": "0",
    "model.tiny.max_position_embeddings": "0",
    "data.source": "web", "data.format": "csv", "data.prompt_key": "''", "data.answer_key": "''",
    "data.max_prompt_tokens": "0", "data.shuffle": "yes",
    "rollout.n": "0", "rollout.temperature": "0", "rollout.top_p": "0", "rollout.max_tokens": "0",
    "rollout.num_actors": "0", "rollout.cpus_per_actor": "-1", "rollout.gpus_per_actor": "-1",
    "rollout.staleness": "-1", "rollout.kv_cache_gb": "0", "rollout.enforce_eager": "yes",
    "rollout.max_model_len": "0", "rollout.max_num_batched_tokens": "0", "rollout.reward_correct": "-1",
    "rollout.reward_wrong": "2", "rollout.verifier_timeout_s": "0", "rollout.stream_poll_s": "0",
    "rollout.weight_timeout_s": "0", "rollout.weight_transfer": "nope", "trainer.max_failures": "-1", "trainer.data_timeout_s": "0",
    "trainer.hang_timeout_s": "-1",
    "trainer.num_workers": "0", "trainer.use_gpu": "yes", "trainer.cpus_per_worker": "0", "trainer.zero_stage": "5",
    "trainer.lr": "0", "trainer.weight_decay": "-1", "trainer.grad_clip": "0", "trainer.prompts_per_step": "0",
    "trainer.mini_batches_per_step": "0", "trainer.micro_batch_size": "0", "trainer.epochs_per_step": "0",
    "trainer.total_steps": "0", "trainer.logprob_chunk_size": "0", "trainer.save_every": "0",
    "trainer.keep_checkpoints": "0", "trainer.is_correction": "sometimes", "trainer.is_cap": "0",
    "trainer.checkpoint_checksums": "yes", "trainer.grad_check_every": "-1", "trainer.grad_check_rows": "0",
    "algorithm.name": "nope", "algorithm.advantage_estimator": "ppo", "algorithm.adv_eps": "-1",
    "algorithm.clip_low": "-0.1", "algorithm.clip_high": "-0.1", "algorithm.dual_clip": "0.5",
    "algorithm.aggregation": "mean", "algorithm.max_response_length": "0", "algorithm.kl_coef": "-1",
    "algorithm.kl_estimator": "k4", "algorithm.entropy_coef": "-1", "algorithm.dynamic_sampling": "yes",
    "algorithm.max_sampling_rounds": "-1", "algorithm.overlong_buffer": "-1", "algorithm.overlong_penalty_factor": "-1",
    "algorithm.alpha": "-1", "algorithm.phi": "0", "algorithm.without_quadrants": "[XYZ]", "algorithm.kappa": "0",
    "algorithm.reverse_entropy": "maybe",
    "algorithm.top_ratio": "0", "algorithm.kl_cov_ratio": "2", "algorithm.kl_cov_coef": "-1",
    "algorithm.clip_cov_ratio": "2", "algorithm.clip_cov_ub": "0", "algorithm.seed": "1.5",
    "algorithm.quadrants": "[]", "algorithm.positive_weight": "-1", "algorithm.pos_weight": "-1",
    "algorithm.neg_weight": "-1", "algorithm.rank_by": "logit", "algorithm.scale_decay": "cosine",
    "algorithm.decay_end": "0", "algorithm.filter_metric": "loss",
    **{f"algorithm.{p}_fraction": "1.5" for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
    **{f"algorithm.{p}_scale": "-1" for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
}
# option-specific invalid values (where the main option's would be fine there, or vice versa)
INVALID_IN = {
    ("main", "model.path"): "/models/x",  # a path the tiny model would ignore
    ("main", "data.path"): "/data/x.parquet",  # a file the synthetic source would ignore
    ("main", "heldout.path"): "/data/h.parquet",
    ("main", "data.format"): "jsonl",  # the synthetic prompts are parquet
    ("model=pretrained", "model.path"): "null",
    ("model=pretrained", "model.tiny"): "{vocab_size: 8}",
    ("data=math_train", "data.path"): "null",
    ("data=math_train", "heldout.path"): "null",  # held-out size 256 with file data needs a file
}

# ---- (b) consumers ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ctx:
    """Real inputs the consumers need: a tokenizer/checkpoint, a run dir with checkpoints, a data dir."""

    checkpoint: str
    tokenizer: object
    run_dir: str
    data_dir: str
    heldout_file: str
    heldout_file2: str
    flipped_checkpoint: str  # committed with checksums, then one byte of its weights flipped (same size)


def _cache_users(c, ctx):
    return _policy(c, ctx), _source(c, ctx)  # the warm start and the synthetic prompts live under it


def _policy(c, ctx):
    from pipeline.setup import policy_location

    return policy_location(c)


def _source(c, ctx):
    from pipeline.setup import source_spec

    return source_spec(c)


def _synthetic(c, ctx):
    from pipeline.setup import synthetic_problems

    return [(p.a, p.b) for p in synthetic_problems(c)]


def _normalise(c, ctx):
    from pipeline.data import Normalise

    prompts = ["What is 1+1?", "What is " + "12+" * 20 + "1?"]
    rows = {c.data.prompt_key.split(".")[0]: np.asarray(prompts, dtype=object),
            c.data.answer_key.split(".")[0]: np.asarray([{"ground_truth": "2"}] * 2 if "." in c.data.answer_key
                                                         else ["2", "3"], dtype=object)}
    out = Normalise(ctx.checkpoint, c.data)(rows)
    return [list(map(int, ids)) for ids in out["prompt_ids"]], list(out["dropped"])


def _stream(c, ctx):
    from pipeline.run import stream_plan

    return stream_plan(c, 2)


def _rollout_resources(c, ctx):
    from pipeline.run import rollout_resources

    return rollout_resources(c)


def _trainer(c, ctx):
    from pipeline.run import trainer_settings

    return trainer_settings(c)


def _ray(c, ctx):
    from pipeline.setup import ray_init_kwargs

    return ray_init_kwargs(c)


def _sampling(c, ctx):
    from actors.rollout import sampling_kwargs

    return sampling_kwargs(c, shard=3, round_=0)


def _engine(c, ctx):
    from core.engine import engine_config, engines_on_cpu

    return engine_config(c).vllm_kwargs(engines_on_cpu(c))


def _heldout_request(c, ctx):
    from actors.rollout import heldout_request

    return heldout_request(c)


def _heldout_sampling(c, ctx):
    from actors.rollout import heldout_sampling

    return heldout_sampling(c)


def _heldout_due(c, ctx):
    from actors.rollout import heldout_due
    from core.batch import PromptShard
    from core.config import shards_per_step

    per_step = shards_per_step(c)
    return [heldout_due(c, PromptShard(step=s, shard=s * per_step, uids=[], prompt_ids=[], golds=[]))
            for s in range(40)]


def _heldout_set(c, ctx):
    from pipeline.setup import heldout_set

    held = heldout_set(c, ctx.tokenizer)
    return held.prompt_ids[:3], held.golds, len(held)


def _weight_request(c, ctx):
    from actors.rollout import weight_request

    return weight_request(c, 5)


def _version(c, ctx):
    from actors.rollout import required_version

    return required_version(c, 5)


def _scores(c, ctx):
    from actors.reward import Scorer

    texts = ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}", "no answer"]
    rewards, correct, _ = Scorer(c).score(texts, ["2"] * 4, [2, 30, c.rollout.max_tokens, 1])
    return rewards.tolist(), correct.tolist()


def _selection(c, ctx):
    """The groups dynamic sampling keeps of an all-correct group apart only by the overlong penalty, a mixed group
    and one refill round (``actors.rollout.selection_settings``: what the rollout actor passes)."""
    from actors.dynamic_sampling import Group, select_groups
    from actors.rollout import selection_settings

    def group(tag, rewards, correct):
        return Group(prompt_ids=[1], gold=tag, response_ids=[[1]] * 2, texts=[tag] * 2, logprobs=[[0.0]] * 2,
                     truncated=[False] * 2, rewards=np.asarray(rewards, np.float32),
                     correct=np.asarray(correct, bool), reasons=["x"] * 2)

    first = [group("shaped", [1.0, 0.75], [True, True]), group("mixed", [1.0, 0.0], [True, False])]
    sel = select_groups(first, lambda r: [group(f"refill{r}", [0.0, 1.0], [False, True])] * 2, **selection_settings(c))
    return [g.gold for g in sel.groups], sel.train


def _optimizer(c, ctx):
    from actors.train_worker import optimizer_settings

    return optimizer_settings(c)


def _deepspeed(c, ctx):
    from actors.train_worker import deepspeed_config, micro_batching

    return deepspeed_config(c, *micro_batching(c, c.trainer.num_workers))


def _gradient_checkpointing(c, ctx):
    from actors.train_worker import load_policy

    return load_policy(c, ctx.checkpoint).is_gradient_checkpointing


def _checkpoint_steps(c, ctx):
    from actors.train_worker import checkpoint_due, eval_due

    return [s for s in range(1, 130) if checkpoint_due(c, s)], [s for s in range(1, 130) if eval_due(c, s)]


def _forward(c, ctx):
    from actors.update import forward_kwargs

    return forward_kwargs(c)


def _grad_checks(c, ctx):
    from actors.update import grad_check_due

    return [grad_check_due(c, s) for s in range(12)]


def _grad_check_rows(c, ctx):
    from actors.update import grad_check_size

    return grad_check_size(c, 64)


def _update_path(c, ctx):
    from actors.train_worker import micro_batching
    from actors.update import fused, response_length_constant
    from losses import build_algorithm

    algo = build_algorithm(c.algorithm)
    return fused(c, algo, micro_batching(c, c.trainer.num_workers)[0]), response_length_constant(c, algo)


def _importance(c, ctx):
    from actors.update import importance_weights

    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=g) * 3
    part = type("Part", (), {"behaviour_logprobs": old - torch.rand(4, 6, generator=g) * 2,
                             "response_mask": torch.ones(4, 6)})
    weights = importance_weights(c, old, part)
    return None if weights is None else weights[0].tolist()


def _stale_checkpoints(c, ctx):
    from actors.checkpoint import checkpoints_to_remove

    return checkpoints_to_remove(c)


def _checkpoint_integrity(c, ctx):
    """What a save writes into the manifest, and what resume finds wrong with a checkpoint whose bytes
    changed but not its size (``trainer.checkpoint_checksums`` is what save and resume pass)."""
    from core.checkpoint_files import build_manifest, verify

    manifest = build_manifest(ctx.flipped_checkpoint, 7, c.trainer.checkpoint_checksums)
    return manifest["files"]["model.safetensors"], verify(ctx.flipped_checkpoint, 7, c.trainer.checkpoint_checksums)


def _resource_wait(c, ctx):
    from pipeline.resources import wait_plan

    return wait_plan(c)


def _eval_plan(c, ctx):
    from actors.periodic_eval import eval_plan, eval_sampling, evaluator_resources

    plan = {name: (len(p), golds[:3], skipped) for name, (p, golds, skipped) in eval_plan(c, ctx.tokenizer).items()}
    return plan, eval_sampling(c), evaluator_resources(c)


def _eval_summary(c, ctx):
    from actors.periodic_eval import summarise_scores

    return summarise_scores(c, "gsm8k", [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0] * 4])


def _algorithm(c, ctx):
    """Everything the built algorithm computes on a fixed batch: advantages, shaped credit, the loss."""
    from losses import build_algorithm
    from tests.losses.conftest import make_batch

    algo = build_algorithm(c.algorithm)
    b = make_batch(seed=5, B=12, T=6, G=3)
    rewards = torch.tensor([1, -1, -1, 1, 1, -1, -1, -1, 1, 1, 1, -1], dtype=torch.float64)  # W-REINF's +-1
    adv = algo.compute_advantages(rewards, b["group_ids"])
    algo.begin_step(3, 10)
    adv_tok = adv[:, None] * b["mask"]
    credit = algo.shape_credit(adv_tok, b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    g = torch.Generator().manual_seed(1)
    logprobs = b["old_logprobs"] + torch.randn(b["old_logprobs"].shape, generator=g, dtype=torch.float64)
    ref = b["old_logprobs"] - 0.3
    out = algo.policy_loss(logprobs, b["old_logprobs"], credit, b["mask"], algo.normalizer(b["mask"]),
                           ref_logprobs=ref, entropy=b["entropy"].nan_to_num())
    return [adv, credit.advantages, credit.token_weight, out.loss.detach()]


CONSUMERS = {
    "run_dir": _ray, "seed": _sampling, "data_dir": _eval_plan, "ray_address": _ray,
    "ray_autoscaling": _resource_wait, "ray_resource_wait_s": _resource_wait,
    "task.digits": _synthetic, "task.heldout_fraction": _synthetic, "task.num_train_prompts": _synthetic,
    **{f"warm_start.{k}": _policy for k in ("steps", "batch_size", "lr", "num_examples", "carry_noise",
                                                     "fact_noise", "free_letters", "free_alphabet")},
    "heldout.size": _heldout_set, "heldout.max_tokens": _heldout_request, "heldout.every": _heldout_due,
    "heldout.path": _heldout_set, "heldout.sample_k": _heldout_sampling,
    "periodic_eval.every": _checkpoint_steps, "periodic_eval.benchmarks": _eval_plan, "periodic_eval.k": _eval_summary,
    "periodic_eval.n": _eval_plan, "periodic_eval.limit": _eval_plan, "periodic_eval.temperature": _eval_plan,
    "periodic_eval.top_p": _eval_plan, "periodic_eval.max_tokens": _eval_plan, "periodic_eval.cpus": _eval_plan,
    "model.kind": _policy, "model.path": _policy, "model.dtype": _engine, "model.cache_dir": _cache_users,
    "model.gradient_checkpointing": _gradient_checkpointing, "model.tiny": _policy,
    **{f"model.tiny.{k}": _policy for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                            "intermediate_size", "max_position_embeddings")},
    "data.source": _source, "data.path": _source, "data.format": _source, "data.prompt_key": _source,
    "data.answer_key": _source, "data.prompt_suffix": _normalise, "data.max_prompt_tokens": _normalise,
    "data.shuffle": _stream,
    "rollout.n": _sampling, "rollout.temperature": _sampling, "rollout.top_p": _sampling,
    "rollout.max_tokens": _sampling, "rollout.num_actors": _stream, "rollout.cpus_per_actor": _rollout_resources,
    "rollout.gpus_per_actor": _engine, "rollout.staleness": _version, "rollout.kv_cache_gb": _engine,
    "rollout.enforce_eager": _engine, "rollout.max_model_len": _engine, "rollout.max_num_batched_tokens": _engine,
    "rollout.reward_correct": _scores, "rollout.reward_wrong": _scores, "rollout.verifier_timeout_s": _heldout_request,
    "rollout.stream_poll_s": _ray, "rollout.weight_timeout_s": _weight_request,
    "trainer.max_failures": _trainer, "trainer.data_timeout_s": _trainer, "trainer.hang_timeout_s": _trainer,
    "trainer.num_workers": _trainer, "trainer.use_gpu": _trainer, "trainer.cpus_per_worker": _trainer,
    "trainer.zero_stage": _deepspeed, "trainer.lr": _optimizer, "trainer.weight_decay": _optimizer,
    "trainer.grad_clip": _deepspeed, "trainer.prompts_per_step": _stream, "trainer.mini_batches_per_step": _deepspeed,
    "trainer.micro_batch_size": _deepspeed, "trainer.epochs_per_step": _update_path, "trainer.total_steps": _stream,
    "trainer.logprob_chunk_size": _forward, "trainer.save_every": _checkpoint_steps,
    "trainer.keep_checkpoints": _stale_checkpoints, "trainer.checkpoint_checksums": _checkpoint_integrity,
    "trainer.is_correction": _importance, "trainer.is_cap": _importance, "trainer.grad_check_every": _grad_checks,
    "trainer.grad_check_rows": _grad_check_rows,
    "algorithm.dynamic_sampling": _stream, "algorithm.max_sampling_rounds": _stream,
    "algorithm.filter_metric": _selection,
    "algorithm.overlong_buffer": _scores, "algorithm.overlong_penalty_factor": _scores,
    "algorithm.max_response_length": _update_path,
}  # every other algorithm.* key: _algorithm

# a valid value other than the option's own (first candidate that differs)
ALTERNATIVE = {
    "run_dir": ["runs/other"], "seed": ["1"], "ray_address": ["auto"], "data_dir": lambda ctx: [ctx.data_dir],
    "ray_autoscaling": ["true", "false"], "ray_resource_wait_s": ["30", "60"],
    "rollout.gpus_per_actor": ["1"], "trainer.use_gpu": ["true"],
    "task.digits": ["3"], "task.heldout_fraction": ["0.3"], "task.num_train_prompts": ["100"],
    "warm_start.steps": ["10"], "warm_start.batch_size": ["8"], "warm_start.lr": ["0.1"],
    "warm_start.num_examples": ["100"], "warm_start.carry_noise": ["0.1"], "warm_start.fact_noise": ["0.2"],
    "warm_start.free_letters": ["2"], "warm_start.free_alphabet": ["4"],
    "heldout.size": ["5"], "heldout.max_tokens": ["16"], "heldout.every": ["3"], "heldout.sample_k": ["4", "0"],
    "periodic_eval.every": ["50"], "periodic_eval.benchmarks": ["[aime24]"], "periodic_eval.k": ["2"],
    "periodic_eval.n": ["3"], "periodic_eval.limit": ["2"], "periodic_eval.temperature": ["1.0"],
    "periodic_eval.top_p": ["0.5"], "periodic_eval.max_tokens": ["200"], "periodic_eval.cpus": ["1"],
    "model.kind": ["pretrained"], "model.dtype": ["bfloat16", "float32"], "model.cache_dir": ["/tmp/other-cache"],
    "model.gradient_checkpointing": ["true", "false"],
    "model.tiny.vocab_size": ["256"], "model.tiny.hidden_size": ["64"], "model.tiny.num_layers": ["2"],
    "model.tiny.num_heads": ["4"], "model.tiny.num_kv_heads": ["2"], "model.tiny.intermediate_size": ["256"],
    "model.tiny.max_position_embeddings": ["1024", "4096"],
    "data.format": ["parquet", "jsonl"], "data.prompt_key": ["question"], "data.answer_key": ["answer"],
    "data.prompt_suffix": ["'Think.'"], "data.max_prompt_tokens": ["24"], "data.shuffle": ["false", "true"],
    "rollout.n": ["4"], "rollout.temperature": ["0.7"], "rollout.top_p": ["0.9"], "rollout.max_tokens": ["16"],
    "rollout.num_actors": ["2"], "rollout.cpus_per_actor": ["1"], "rollout.staleness": ["1"],
    "rollout.kv_cache_gb": ["1.5"], "rollout.enforce_eager": ["false"], "rollout.max_model_len": ["200", "2000"],
    "rollout.max_num_batched_tokens": ["20000"], "rollout.reward_correct": ["2"], "rollout.reward_wrong": ["-1", "0"],
    "rollout.verifier_timeout_s": ["1"], "rollout.stream_poll_s": ["0.5"],
    "rollout.weight_timeout_s": ["30"], "trainer.max_failures": ["0"], "trainer.data_timeout_s": ["60"],
    "trainer.hang_timeout_s": ["30"],
    "trainer.num_workers": ["2"], "trainer.cpus_per_worker": ["2"], "trainer.zero_stage": ["2", "0"],
    "trainer.lr": ["0.1"], "trainer.weight_decay": ["0.1"], "trainer.grad_clip": ["0.5"],
    "trainer.prompts_per_step": ["32"], "trainer.mini_batches_per_step": ["2"], "trainer.micro_batch_size": ["32"],
    "trainer.epochs_per_step": ["2"], "trainer.total_steps": ["10", "20"], "trainer.logprob_chunk_size": ["64"],
    "trainer.save_every": ["7"], "trainer.keep_checkpoints": ["1"], "trainer.is_correction": ["true"],
    "trainer.checkpoint_checksums": ["false", "true"],
    "trainer.is_cap": ["1.2"], "trainer.grad_check_every": ["5", "0"], "trainer.grad_check_rows": ["32"],
    "algorithm.advantage_estimator": ["rloo"], "algorithm.adv_eps": ["0.005"], "algorithm.clip_low": ["0.05"],
    "algorithm.clip_high": ["0.05"], "algorithm.dual_clip": ["1.5"],
    "algorithm.aggregation": ["seq_mean_token_sum", "token_mean"], "algorithm.max_response_length": ["64"],
    "algorithm.kl_coef": ["0.5"], "algorithm.kl_estimator": ["k1"], "algorithm.entropy_coef": ["0.5", "0.1"],
    "algorithm.dynamic_sampling": ["true", "false"], "algorithm.max_sampling_rounds": ["1"],
    "algorithm.filter_metric": ["reward", "accuracy"],
    "algorithm.overlong_buffer": ["20", "10"], "algorithm.overlong_penalty_factor": ["3"],
    "algorithm.alpha": ["0.9", "0.2"], "algorithm.reverse_entropy": ["true", "false"], "algorithm.phi": ["1.5"],
    "algorithm.without_quadrants": ["[PHR,NHR]"],
    "algorithm.kappa": ["0.5"], "algorithm.top_ratio": ["0.7"], "algorithm.kl_cov_ratio": ["0.5"],
    "algorithm.kl_cov_coef": ["5"], "algorithm.clip_cov_ratio": ["0.5"], "algorithm.clip_cov_lb": ["-1e9"],
    "algorithm.clip_cov_ub": ["0.0"], "algorithm.seed": ["7"], "algorithm.quadrants": ["[PLR,NLR]", "[PHR]"],
    "algorithm.positive_weight": ["0.7"], "algorithm.pos_weight": ["3"], "algorithm.neg_weight": ["3"],
    "algorithm.rank_by": ["entropy"], "algorithm.scale_decay": ["none"], "algorithm.decay_end": ["0.2"],
    **{f"algorithm.{p}_fraction": ["0.5", "0.1"] for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
    **{f"algorithm.{p}_scale": ["3", "0.5"] for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
}
ALTERNATIVE_IN = {  # keys whose alternative needs the option's context
    ("model=pretrained", "model.path"): ["/models/y"],
    ("data=math_train", "data.path"): ["/data/other.parquet"], ("data=math_train", "data.source"): ["synthetic"],
    ("main", "data.source"): ["files"],
    ("data=math_train", "heldout.path"): lambda ctx: [ctx.heldout_file2],
}
# keys that act only together with another setting: the overrides under which the key is changed
CONTEXT = {
    "data_dir": lambda ctx: ["periodic_eval.benchmarks=[gsm8k]"],
    "periodic_eval.benchmarks": lambda ctx: [f"data_dir={ctx.data_dir}", "periodic_eval.benchmarks=[gsm8k]"],
    "periodic_eval.k": lambda ctx: ["periodic_eval.n=4"],
    "rollout.gpus_per_actor": lambda ctx: ["ray_address=auto"],
    "trainer.use_gpu": lambda ctx: ["ray_address=auto"],
    **{f"periodic_eval.{k}": (lambda ctx: [f"data_dir={ctx.data_dir}", "periodic_eval.benchmarks=[gsm8k]"])
       for k in ("n", "limit", "max_tokens")},
    "periodic_eval.every": lambda ctx: ["trainer.save_every=25"],
    "trainer.keep_checkpoints": lambda ctx: [f"run_dir={ctx.run_dir}"],
    "trainer.is_cap": lambda ctx: ["trainer.is_correction=true"],
    "algorithm.kl_estimator": lambda ctx: ["algorithm.kl_coef=0.5"],
    "algorithm.max_sampling_rounds": lambda ctx: ["algorithm.dynamic_sampling=true"],
    "algorithm.filter_metric": lambda ctx: ["algorithm.dynamic_sampling=true"],
    "algorithm.overlong_penalty_factor": lambda ctx: ["algorithm.overlong_buffer=20"],
    "algorithm.max_response_length": lambda ctx: ["algorithm.aggregation=seq_mean_token_sum_norm"],
    "algorithm.adv_eps": lambda ctx: ["algorithm.advantage_estimator=grpo"],
    "algorithm.seed": lambda ctx: ["algorithm.clip_cov_ratio=0.5", "algorithm.clip_cov_lb=-1e9", "algorithm.clip_cov_ub=1e9"],
    "algorithm.clip_cov_ratio": lambda ctx: ["algorithm.clip_cov_lb=-1e9", "algorithm.clip_cov_ub=1e9"],
    "algorithm.clip_cov_lb": lambda ctx: ["algorithm.clip_cov_ratio=0.5", "algorithm.clip_cov_ub=1e9"],
    "algorithm.clip_cov_ub": lambda ctx: ["algorithm.clip_cov_ratio=0.5", "algorithm.clip_cov_lb=-1e9"],
    **{f"algorithm.{p}_fraction": (lambda ctx, p=p: [f"algorithm.{p}_scale=3"])
       for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
    **{f"algorithm.{p}_scale": (lambda ctx, p=p: [f"algorithm.{p}_fraction=0.3"])
       for p in ("pos_high", "pos_low", "neg_high", "neg_low")},
    "model.tiny.max_position_embeddings": lambda ctx: [],
    "heldout.path": lambda ctx: ["heldout.size=2"],
    "model.gradient_checkpointing": lambda ctx: [],
}
CONTEXT_IN = {
    ("data=math_train", "heldout.path"): lambda ctx: ["heldout.size=2", f"heldout.path={ctx.heldout_file}"],
    ("data=math_train", "heldout.size"): lambda ctx: [f"heldout.path={ctx.heldout_file}"],
}
WITH_ALTERNATIVE = {  # keys that switch a whole option: what else the changed config needs to be valid
    ("main", "model.kind"): ["model.path=/models/x", "model.tiny=null"],
    ("main", "data.source"): ["data.path=/data/x.parquet", "heldout.size=0"],
    ("data=math_train", "data.source"): ["data.path=null", "heldout.path=null"],
}
INERT = {  # (option, key): why the key cannot change anything there
    ("algorithm=kl_cov", "algorithm.clip_low"): "KL-Cov's surrogate is unclipped (-A*rho)",
    ("algorithm=kl_cov", "algorithm.clip_high"): "KL-Cov's surrogate is unclipped (-A*rho)",
    ("algorithm=kl_cov", "algorithm.dual_clip"): "KL-Cov's surrogate is unclipped (-A*rho)",
    ("model=pretrained", "model.tiny"): "null: the checkpoint's config.json gives the size (a value is rejected)",
    ("main", "heldout.path"): "synthetic data draws its own held-out problems (a value is rejected)",
    ("main", "data.path"): "the synthetic source has no path (a value is rejected)",
    ("main", "rollout.weight_transfer"): "object_store is the one backend wired; nccl/ipc are refused (no GPU here; "
                                         "not wired to the rollout actor pool): no valid alternative (test_config.py)",
    ("main", "model.path"): "the tiny model has no path (a value is rejected)",
    ("main", "algorithm.name"): "selects the algorithm: covered per algorithm=<name> option",
    ("model=pretrained", "model.kind"): "switching kind is the model=tiny option: covered under main",
    **{(f"algorithm={a}", "algorithm.name"): "selects the algorithm class; another name is another algorithm=<name> "
       "option (whose keys differ): covered by every option's own keys" for a in ALGORITHMS},
    **{(f"algorithm=quadrant_{q}", key): "trains on positive quadrants only: the lower and dual clip act on A < 0"
       for q in ("phr", "plr") for key in ("algorithm.clip_low", "algorithm.dual_clip")},
    **{(f"algorithm=quadrant_{q}", "algorithm.clip_high"): "trains on negative quadrants only: the upper clip "
       "acts on A > 0" for q in ("nhr", "nlr")},
}


def compose_overrides(*overrides: str):
    with initialize_config_module(config_module="configs", version_base=None):
        return compose(config_name="config", overrides=list(overrides))


_OPTION_CONFIGS: dict[str, object] = {}


def config_for(option: str, *overrides: str):
    """Hydra's composition of ``option`` (once per option), then ``key=value`` overrides parsed by Hydra's
    override grammar and applied as Hydra applies them (hundreds of cases: composing each would take minutes)."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser

    if option not in _OPTION_CONFIGS:
        _OPTION_CONFIGS[option] = compose_overrides(*OPTIONS[option])
    cfg = copy.deepcopy(_OPTION_CONFIGS[option])
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


def test_config_for_equals_hydra_composition():
    extra = ["rollout.n=4", "algorithm.alpha=0.5", "model.tiny.hidden_size=64", "data_dir=/d", "heldout.path=null"]
    assert config_for("algorithm=eapo", *extra) == compose_overrides(*OPTIONS["algorithm=eapo"], *extra)


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def cases() -> list[tuple[str, str]]:
    out = []
    for option, overrides in OPTIONS.items():
        tree = OmegaConf.to_container(compose_overrides(*overrides), resolve=False)
        tree.pop("hydra", None)
        for key in leaves(tree):
            if OWN_KEYS[option](key) and (option == "main" or not key.startswith("algorithm.")
                                          or option.startswith("algorithm=")):
                if option == "main" and key.startswith("algorithm."):
                    continue  # the default algorithm's keys: covered by algorithm=eapo
                out.append((option, key))
    return out


CASES = cases()


def test_every_key_is_covered():
    keys = {k for _, k in CASES}
    assert keys - set(INVALID) - FREE_FORM - {k for _, k in INVALID_IN} == set()
    assert {k for k in keys if not k.startswith("algorithm.")} - set(CONSUMERS) - {k for _, k in INERT} == set()


@pytest.mark.parametrize("option,key", CASES, ids=[f"{o}:{k}" for o, k in CASES])
def test_an_invalid_value_is_rejected_naming_the_key(option, key):
    bad = INVALID_IN.get((option, key), INVALID.get(key, WRONG_TYPE if key in FREE_FORM else None))
    with pytest.raises(ConfigError) as info:
        C.load(config_for(option, f"{key}={bad}"))
    assert key in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    from transformers import AutoTokenizer

    from task.tiny_model import build_random_policy, tiny_spec

    root = tmp_path_factory.mktemp("every_key")
    ckpt = build_random_policy(str(root / "ckpt"), seed=0, spec=tiny_spec(hidden_size=32, num_layers=1,
                                                                          intermediate_size=32))
    from tests.checkpoint_layout import write_checkpoint

    run_dir = root / "run"
    for step in (10, 20, 30):  # three intact committed checkpoints
        write_checkpoint(run_dir, step, ckpt, checksums=False)
    flipped = write_checkpoint(root / "flipped", 7, ckpt, checksums=True)
    with open(os.path.join(flipped, "model.safetensors"), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    for name, row in (("gsm8k", lambda i: {"question": f"What is {i}+1?", "answer": f"#### {i + 1}"}),
                      ("aime24", lambda i: {"problem": f"What is {i}+5?", "answer": str(i + 5)})):
        bench = root / "data" / "benchmarks" / name
        bench.mkdir(parents=True)
        bench.joinpath("test.jsonl").write_text("\n".join(json.dumps(row(i)) for i in range(3)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for k in (2, 7):
        path = root / f"heldout{k}.parquet"
        pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": f"What is {i}+{k}?"}],
                                              "reward_model": {"ground_truth": str(i + k)}} for i in range(4)]), path)
        files.append(str(path))
    return Ctx(ckpt, AutoTokenizer.from_pretrained(ckpt), str(run_dir), str(root / "data"), *files, flipped)


def _load(option, overrides):
    return C.load(config_for(option, *overrides))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            torch.allclose(a.nan_to_num(), b.nan_to_num(), rtol=1e-9, atol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("option,key", CASES, ids=[f"{o}:{k}" for o, k in CASES])
def test_changing_the_key_changes_what_its_consumer_does(option, key, ctx):
    if (option, key) in INERT:
        pytest.skip(INERT[(option, key)])
    context = CONTEXT_IN.get((option, key), CONTEXT.get(key, lambda _: []))(ctx)
    base = _load(option, context)
    current = OmegaConf.select(config_for(option, *context), key)
    candidates = ALTERNATIVE_IN.get((option, key), ALTERNATIVE.get(key))
    assert candidates, f"no alternative value for {key}"
    if callable(candidates):
        candidates = candidates(ctx)
    alt = next(v for v in candidates if str(yaml_value(v)) != str(current))
    changed = _load(option, [*context, f"{key}={alt}", *WITH_ALTERNATIVE.get((option, key), [])])
    consumer = CONSUMERS.get(key, _algorithm if key.startswith("algorithm.") else None)
    before, after = consumer(base, ctx), consumer(changed, ctx)
    assert not _same(before, after), f"{key}: {current!r} -> {alt!r} did not change {consumer.__name__}"


def yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)
