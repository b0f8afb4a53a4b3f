"""The Ray Train worker loop: a DeepSpeed engine per worker, fed by the rollout stream.

Per step, each worker takes its shards of the step from the Ray Train dataset shard, then the
policy update (:mod:`actors.update`: credit shaping with EAPO or any registered algorithm, the loss,
DeepSpeed optimizer steps over micro-batches, skipped without signal) -> rank 0 publishes the new weights
to the rollout engines; (every ``save_every`` steps) all ranks write a checkpoint; rank 0 logs metrics (and a
console warning when a step trains on nothing, :mod:`actors.train_warnings`), then the checkpoint is
committed. The step's metrics line is fsynced before its checkpoint's ``COMPLETE``: a crash in between
resumes from the checkpoint before and drops that line, a crash after keeps it, so ``metrics.jsonl`` holds
every step up to the resume point (checked at every start, ``core.run_dir.require_metrics_through``).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from actors.checkpoint import commit_checkpoint, load_trainer_state, write_checkpoint
from actors.periodic_eval import evaluate_checkpoint
from actors.reward import verdict_counts
from actors.train_warnings import NothingTrainedWarnings
from actors.update import grad_check_due, update
from actors.weights import STORE_NAME
from core.batch import collate
from core.config import Config, shards_per_step
from core.faults import point as fault_point
from core.heartbeat import start_heartbeat
from core.run_dir import require_metrics_through, start_point, truncate_metrics
from core.stages import TrainLoopSetup


def _disable_deepspeed_shm_op() -> None:
    """DeepSpeed compiles a CPU shared-memory all-reduce op at first init (~1 min); gloo suffices."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def torch_dtype(cfg: Config) -> torch.dtype:
    """The training dtype of ``model.dtype`` (already resolved from ``auto`` by the config)."""
    return torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32


def deepspeed_config(cfg: Config, micro: int, grad_accum: int) -> dict:
    """DeepSpeed config of the policy engine: ``micro`` responses per forward, ``grad_accum`` of them per
    optimizer step, the run's clipping and ZeRO stage, bf16 when ``model.dtype`` says so."""
    t, dtype = cfg.trainer, torch_dtype(cfg)
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def optimizer_settings(cfg: Config) -> dict:
    """AdamW arguments of the policy optimizer (``trainer.lr``, ``trainer.weight_decay``)."""
    return {"lr": cfg.trainer.lr, "weight_decay": cfg.trainer.weight_decay}


def load_policy(cfg: Config, model_path: str):
    """The trainable Hugging Face policy in the run's dtype, gradient checkpointing as ``model.*`` says."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(cfg))
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def checkpoint_due(cfg: Config, step: int) -> bool:
    """Whether a checkpoint is written after ``step`` updates: every ``trainer.save_every`` steps, and the last."""
    return step % cfg.trainer.save_every == 0 or step == cfg.trainer.total_steps


def eval_due(cfg: Config, step: int) -> bool:
    """Whether the checkpoint of ``step`` is benchmarked (``periodic_eval.every``, a multiple of save_every)."""
    every = cfg.periodic_eval.every
    return bool(every) and step % every == 0 and checkpoint_due(cfg, step)


def build_engine(cfg: Config, model_path: str, micro: int, grad_accum: int):
    """DeepSpeed engine around the policy (:class:`~actors.policy_forward.PolicyModule`: the HF model plus
    the log-prob/entropy forward) with a torch AdamW (no fused-kernel compilation)."""
    import deepspeed

    from actors.policy_forward import PolicyModule

    _disable_deepspeed_shm_op()
    model = PolicyModule(load_policy(cfg, model_path), cfg.trainer.zero_stage)
    optimizer = torch.optim.AdamW(model.parameters(), **optimizer_settings(cfg))
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, micro, grad_accum))
    return engine


def build_reference(cfg: Config, reference_path: str, device):
    """The frozen KL reference (``algorithm.kl_coef > 0``): the initial policy in eval mode, no grad, on
    ``device``; None when the algorithm has no KL term. Not sharded (ZeRO-3 with KL is rejected by the config)."""
    if cfg.algorithm.kl_coef == 0:
        return None
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reference_path, dtype=torch_dtype(cfg)).to(device).eval()
    model.requires_grad_(False)
    return model


def weight_sender(engine, rank: int):
    """This rank's trainer-side weight-transfer engine (``actors.weight_transfer``, vLLM's interface), publishing
    to the run's :class:`~actors.weights.WeightStore`."""
    import ray

    from actors.weight_transfer import trainer_sender

    return trainer_sender(engine, rank, ray.get_actor(STORE_NAME))


def publish_weights(sender, version: int) -> float:
    """Every rank: one weight-transfer round of ``sender`` (:func:`weight_sender`): the full weights gathered (a
    collective under ZeRO-3), rank 0 puts them in the object store and announces ``version``. Returns seconds."""
    t0 = time.perf_counter()
    sender.client.version = version
    sender.send_weights()
    return time.perf_counter() - t0


def _shard_sum(shards, key: str) -> float:
    return float(sum(s.metrics.get(key, 0.0) for s in shards))


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def rollout_metrics(shards) -> dict:
    """Sampling-side scalars of one step, summed over the step's shards.

    ``reward/mean`` and ``reward/accuracy`` are over the step's own prompts (first sampling round),
    an unbiased training-reward curve even when dynamic sampling trains on a filtered batch.
    ``rollout/tokens_generated``: response tokens the engines generated, every sampling round included (the
    generation work of the step); ``dynamic_sampling/kept_groups``: groups that enter the loss.
    """
    n, groups = _shard_sum(shards, "sampled/responses"), _shard_sum(shards, "sampled/groups")
    sampled = _shard_sum(shards, "dynamic_sampling/sampled_groups")
    out = {
        "reward/mean": _ratio(_shard_sum(shards, "sampled/reward_sum"), n),
        "reward/accuracy": _ratio(_shard_sum(shards, "sampled/correct_sum"), n),
        "reward/solved_all_share": _ratio(_shard_sum(shards, "sampled/groups_all_correct"), groups),
        "reward/solved_none_share": _ratio(_shard_sum(shards, "sampled/groups_none_correct"), groups),
        "dynamic_sampling/filtered_share": _ratio(_shard_sum(shards, "dynamic_sampling/filtered_groups"), sampled),
        "dynamic_sampling/extra_rounds": max(s.metrics.get("dynamic_sampling/extra_rounds", 0.0) for s in shards),
        "dynamic_sampling/unfilled_share": _ratio(_shard_sum(shards, "dynamic_sampling/unfilled_groups"), groups),
        "dynamic_sampling/kept_groups": _shard_sum(shards, "dynamic_sampling/kept_groups"),
        "rollout/tokens_generated": _shard_sum(shards, "sampled/generated_tokens"),
    }
    for s in shards:
        out.update({k: v for k, v in s.metrics.items() if k.startswith("heldout/")})
    return out


def step_metrics(shards, batch, old_lp, old_entropy, diag, opt_stats, timings) -> dict:
    """Scalars logged for one step (see README, "Metrics").

    ``rollout/logprob_gap`` = mean over trained response tokens of |log μ(o_t) − log π_old(o_t)|, where
    log μ(o_t) is the engine's log-prob of the token it sampled: vLLM's *processed* log-prob, i.e. of the
    temperature-scaled distribution after top-p truncation and renormalisation, with the weights the engine
    held (``rollout/weight_version_lag`` updates old); and log π_old(o_t) is the trainer's log-prob of the same
    token under the full (untruncated) temperature-scaled softmax of the weights it is about to update. So it
    is ~1e-7 on-policy with top-p = 1 (numerics only); with top-p < 1 each token adds −log Z_t even on-policy
    (Z_t = the probability mass of the nucleus at its position), and with staleness the weights' drift adds:
    the gap the IS correction (``is/*``, ``trainer.is_correction``) compensates.
    """
    mask = batch.response_mask
    gap = ((batch.behaviour_logprobs - old_lp).abs() * mask).sum() / mask.sum().clamp(min=1)
    lengths = mask.sum(-1)[mask.sum(-1) > 0]
    return {
        **rollout_metrics(shards),
        "reward/train_mean": float((batch.rewards * (mask.sum(-1) > 0)).sum() / max(1, len(lengths))),
        "response_length/mean": float(lengths.float().mean()) if len(lengths) else 0.0,
        "response_length/truncated_share": float(np.mean([t for s in shards for t in s.truncated])),
        "entropy/mean": float((old_entropy * mask).sum() / mask.sum().clamp(min=1)),
        "advantage/abs_mean": float((batch.advantages.abs() * (mask.sum(-1) > 0)).sum() / max(1, len(lengths))),
        "rollout/logprob_gap": float(gap),
        "data/first_shard": float(min(s.shard for s in shards)),
        "rollout/weight_version_lag": float(np.mean([s.step - s.weight_version for s in shards])),
        **opt_stats, **diag, **verdict_counts(shards), **timings,
    }


def micro_batching(cfg: Config, world: int) -> tuple[int, int]:
    """(micro-batch size, micro-batches per optimizer step) of each of ``world`` workers."""
    responses = cfg.trainer.prompts_per_step // world * cfg.rollout.n
    mini = responses // cfg.trainer.mini_batches_per_step
    micro = min(cfg.trainer.micro_batch_size, mini)
    return micro, mini // micro


def fault(rank: int, name: str, step: int, run_dir: str) -> None:
    """Rank 0's fault-injection point ``name`` of ``step`` (``core.faults``, ``EAPO_FAULTS``; tests only)."""
    if rank == 0:
        fault_point(name, step, run_dir)


class BoundedBatches:
    """The worker's rollout stream with a bound on each wait: a step whose shards do not arrive within
    ``timeout_s`` raises TimeoutError naming the step (Ray Train then restarts from the last checkpoint,
    or the run fails with that message) instead of hanging."""

    def __init__(self, stream, timeout_s: float):
        import queue
        import threading

        self.timeout_s, self.items = timeout_s, queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._pull, args=(iter(stream),), daemon=True)
        self.thread.start()

    def _pull(self, it) -> None:
        for rows in it:
            self.items.put(("rows", rows))
        self.items.put(("end", None))

    def next(self, step: int):
        import queue

        try:
            kind, rows = self.items.get(timeout=self.timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no rollout shards for step {step + 1} after {self.timeout_s:.0f} s "
                               "(trainer.data_timeout_s): the rollout stream stalled") from None
        if kind == "end":
            raise RuntimeError(f"the rollout stream ended before step {step + 1}")
        return rows


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point of each Ray Train worker (see module docstring); ``loop_config["setup"]`` is the
    :class:`~core.stages.TrainLoopSetup` (Ray Train passes a dict)."""
    import ray.train
    from losses import build_algorithm

    setup: TrainLoopSetup = loop_config["setup"]
    cfg = setup.cfg
    start_step, model_path = start_point(cfg.run_dir, setup.initial_path)  # also where a restart continues
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    heartbeat = start_heartbeat(cfg, f"train-rank{rank}")  # a stopped worker is killed (pipeline.hang_monitor)
    per_worker = shards_per_step(cfg) // world
    micro, grad_accum = micro_batching(cfg, world)
    engine = build_engine(cfg, model_path, micro, grad_accum)
    load_trainer_state(engine, cfg.run_dir, start_step, rank, cfg.seed)
    sender = weight_sender(engine, rank)
    reference = build_reference(cfg, setup.reference_path, engine.device)
    algo = build_algorithm(cfg.algorithm)
    if rank == 0:
        truncate_metrics(cfg.run_dir, start_step)  # steps a failed attempt logged after its last checkpoint
        require_metrics_through(cfg.run_dir, start_step)  # a step before the checkpoint without its line: refuse
    logger = setup.logger_factory(start_step) if rank == 0 else None
    warnings = NothingTrainedWarnings(cfg.rollout.max_tokens, cfg.algorithm.max_sampling_rounds)
    stream = ray.train.get_dataset_shard("rollouts").iter_batches(
        batch_size=per_worker, batch_format="numpy", prefetch_batches=0)
    pad_id = setup.pad_id
    torch.set_num_threads(max(1, int(cfg.trainer.cpus_per_worker)))  # Ray would give a 1-CPU actor one thread
    batches, log_s, t_prev = BoundedBatches(stream, cfg.trainer.data_timeout_s), 0.0, time.perf_counter()
    for step in range(start_step, cfg.trainer.total_steps):
        t_wait = time.perf_counter()
        rows = batches.next(step)
        received, t_train = time.time(), time.perf_counter()
        shards = list(rows["payload"])
        batch = collate(shards, pad_id)
        algo.begin_step(step, cfg.trainer.total_steps)
        result = update(engine, algo, batch, cfg, world, micro, reference, grad_check_due(cfg, step))
        adv_tok = batch.advantages[:, None] * batch.response_mask
        diag = algo.diagnostics(adv_tok, result.credit, result.entropy, batch.response_mask, batch.group_ids)
        train_s = time.perf_counter() - t_train
        fault(rank, "before_publish", step + 1, cfg.run_dir)
        publish_s = publish_weights(sender, step + 1)
        fault(rank, "after_publish", step + 1, cfg.run_dir)
        saved = checkpoint_due(cfg, step + 1)
        if saved:  # written, not committed: the step's metrics line becomes durable first (below)
            path = write_checkpoint(engine, cfg, step + 1, rank, setup.tokenizer_path)
        evaluation = {}
        if rank == 0 and eval_due(cfg, step + 1):
            evaluation = evaluate_checkpoint(cfg, path)
        now = time.perf_counter()
        timings = {
            "timing/rollout_s": max(s.timings["rollout_s"] for s in shards),
            "timing/reward_s": max(s.timings["reward_s"] for s in shards),
            "timing/weight_wait_s": max(s.timings["weight_wait_s"] for s in shards),
            "timing/heldout_s": max(s.timings["heldout_s"] for s in shards),
            "timing/data_wait_s": t_train - t_wait,
            "timing/handoff_s": received - max(s.timings["done_at"] for s in shards),
            "timing/train_s": train_s,
            "timing/weight_sync_s": publish_s + max(s.timings["weight_load_s"] for s in shards),
            "timing/log_s": log_s,  # the previous step's logging and ray.train.report
            "timing/step_s": now - t_prev,
        }
        t_prev = now
        metrics = {**step_metrics(shards, batch, result.old_logprobs, result.entropy, diag, result.stats, timings),
                   **evaluation}
        if logger is not None:
            logger.log(step + 1, metrics, sync=saved)  # fsynced before the checkpoint's COMPLETE
            warning = warnings.line(step + 1, metrics)
            if warning:
                print(warning, flush=True)
        if saved:
            fault(rank, "after_metrics", step + 1, cfg.run_dir)
            commit_checkpoint(cfg, path, step + 1, rank)
            fault(rank, "after_complete", step + 1, cfg.run_dir)
        if saved:  # Ray Train's report blocks until its controller polls (~0.4-1.3 s): only at checkpoints
            ray.train.report({"step": step + 1, "checkpoint": path,
                              **{k: v for k, v in metrics.items() if k.startswith("reward/")}})
        log_s = time.perf_counter() - now
    if logger is not None:
        logger.close()
    if heartbeat is not None:
        heartbeat.stop()
