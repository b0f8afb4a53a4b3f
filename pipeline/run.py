"""Entry point: ``python -m pipeline.run [hydra overrides]`` (locally or via ``ray job submit``).

Order of stages (the only place that knows it):
validate config -> prepare policy and prompt source, pick the newest intact checkpoint to resume from
(no Ray yet) -> start/attach Ray -> check every resource request against the cluster -> read prompts
(Ray Data) -> held-out accuracy before -> stream shards through the rollout actor pool and the scorer
into a Ray Train worker group (DeepSpeed) -> held-out accuracy after -> summary.json.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from omegaconf import DictConfig

from core.cli import app, fail
from core.config_files import CONFIG_DIR
from core.durable import write_durably
from core import faults
from core.engine import engine_config, engines_on_cpu
from core.heartbeat import FOLDER as HEARTBEATS
from core.run_dir import (RunDirError, ensure_dir, latest_checkpoint, make_logger_factory, read_metrics,
                          require_metrics_through, resume_point, start_point, truncate_metrics)
from core.stages import HeldoutSet, RolloutSetup, TrainLoopSetup
from core.typed import ConfigError
from pipeline import config as config_mod
from pipeline.config import Config, shards_per_step
from pipeline.data import NORMALISE_CPUS, READ_CPUS, SHARD_CPUS, DataError
from pipeline.hang_monitor import HangMonitor
from pipeline.report import heldout_curve, plot_training_curves
from pipeline.resources import Request, ensure_resources
from pipeline.setup import heldout_set, init_ray, prepare_policy, prepare_source, say, source_spec


def stream_plan(cfg: Config, start_step: int) -> dict:
    """``pipeline.data.shard_stream`` arguments (but the table) of a run starting at ``start_step``: the
    shards of steps [start_step, trainer.total_steps), ``trainer.prompts_per_step`` split over the step's
    shards, the seeded (``data.shuffle``) epoch order, and the dynamic-sampling reserve per shard
    (``algorithm.max_sampling_rounds`` rounds of refills when ``algorithm.dynamic_sampling``)."""
    per_step = shards_per_step(cfg)
    per_shard = cfg.trainer.prompts_per_step // per_step
    algo = cfg.algorithm
    return {"first_shard": start_step * per_step, "num_shards": (cfg.trainer.total_steps - start_step) * per_step,
            "prompts_per_shard": per_shard, "shards_per_step": per_step, "seed": cfg.seed, "shuffle": cfg.data.shuffle,
            "refill_per_shard": per_shard * algo.max_sampling_rounds if algo.dynamic_sampling else 0}


def rollout_resources(cfg: Config) -> dict:
    """Ray resources of each rollout engine (actor pool and the held-out evaluator): CPUs and GPUs per actor."""
    return {"num_cpus": cfg.rollout.cpus_per_actor, "num_gpus": cfg.rollout.gpus_per_actor}


def build_stream(cfg: Config, table, model_path: str, start_step: int, heldout: HeldoutSet):
    """Prompt shards -> rollout actor pool (vLLM sampling, scoring, dynamic sampling): what Ray Train consumes.

    One shard in flight per actor: a shard queued behind a shard of an earlier step would wait for weights
    that step has not produced; after a killed actor restarts, the shard it was working on is the one retried."""
    import ray.data

    from actors.rollout import RolloutWorker
    from pipeline.data import shard_stream

    stream = shard_stream(table, **stream_plan(cfg, start_step))
    return stream.map_batches(
        RolloutWorker, fn_constructor_kwargs={"setup": RolloutSetup(cfg, model_path, start_step, heldout)},
        batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.rollout.num_actors, max_tasks_in_flight_per_actor=1),
        **rollout_resources(cfg),
    )


class RestartableStream:
    """The stream as a Ray Train dataset *factory*: Ray Train calls it at every worker-group start, also
    after a worker failure, and gets a stream that starts where the run is (``core.run_dir.start_point``:
    the latest complete checkpoint's step and data position, its weights in the new rollout actors).

    Before building the stream it resets the weight store to that version, so no rollout actor can load
    weights the failed attempt published after its last checkpoint. ``table``: the prompt table's ObjectRef.
    """

    def __init__(self, cfg: Config, table, init_path: str, heldout: HeldoutSet):
        self.cfg, self.table, self.init_path, self.heldout = cfg, table, init_path, heldout

    def __call__(self):
        import ray

        from actors.weights import STORE_NAME

        start_step, model_path = start_point(self.cfg.run_dir, self.init_path)
        ray.get(ray.get_actor(STORE_NAME).reset.remote(start_step))
        return build_stream(self.cfg, self.table, model_path, start_step, self.heldout)


def trainer_settings(cfg: Config) -> dict:
    """The Ray Train worker group of the run: ``ScalingConfig`` arguments, the torch process-group backend
    (NCCL with GPUs, gloo without), where Ray Train keeps its state (under ``run_dir``), how many worker
    failures it restarts from (``trainer.max_failures``), how long a worker waits for a step's shards and how
    long a silent heartbeat is taken for a hang (``trainer.hang_timeout_s``, :mod:`pipeline.hang_monitor`)."""
    t = cfg.trainer
    return {"scaling": {"num_workers": t.num_workers, "use_gpu": t.use_gpu,
                        "resources_per_worker": {"CPU": t.cpus_per_worker}},
            "backend": "nccl" if t.use_gpu else "gloo", "storage_path": os.path.join(cfg.run_dir, "ray_train"),
            "max_failures": t.max_failures, "data_timeout_s": t.data_timeout_s, "hang_timeout_s": t.hang_timeout_s}


def resource_requests(cfg: Config) -> list[Request]:
    """Every actor and worker the run asks Ray for (:mod:`pipeline.resources` checks them against the cluster):
    the rollout actor pool (:func:`rollout_resources`, ``rollout.num_actors``), the Ray Train workers
    (:func:`trainer_settings`: ``trainer.cpus_per_worker``, one GPU each with ``trainer.use_gpu``), the prompt-shard
    stage, the periodic evaluator (``periodic_eval.every`` > 0), and before training the held-out evaluator and
    the data-reading stages (``pipeline.data``'s fixed requests)."""
    from actors.periodic_eval import evaluator_resources

    r, t = cfg.rollout, cfg.trainer
    rollout = rollout_resources(cfg)
    scaling = trainer_settings(cfg)["scaling"]
    worker = {**scaling["resources_per_worker"], "GPU": 1.0 if scaling["use_gpu"] else 0.0}
    rollout_keys = {"CPU": f"rollout.cpus_per_actor={r.cpus_per_actor:g}", "GPU": f"rollout.gpus_per_actor={r.gpus_per_actor:g}"}
    out = [
        Request("rollout actor", r.num_actors, {"CPU": rollout["num_cpus"], "GPU": rollout["num_gpus"]}, rollout_keys,
                "rollout.num_actors"),
        Request("train worker", t.num_workers, worker,
                {"CPU": f"trainer.cpus_per_worker={t.cpus_per_worker:g}", "GPU": f"trainer.use_gpu={str(t.use_gpu).lower()}"},
                "trainer.num_workers"),
        Request("prompt shards", 1, {"CPU": SHARD_CPUS}, {"CPU": f"the prompt-shard stage ({SHARD_CPUS:g} CPU)"}),
        Request("held-out evaluator", 1, {"CPU": rollout["num_cpus"], "GPU": rollout["num_gpus"]}, rollout_keys,
                during_training=False),
        Request("data reading", 1, {"CPU": max(READ_CPUS, NORMALISE_CPUS)},
                {"CPU": f"the data-reading stage ({max(READ_CPUS, NORMALISE_CPUS):g} CPU)"}, during_training=False),
    ]
    if cfg.periodic_eval.every:
        ev = evaluator_resources(cfg)
        out.append(Request("periodic evaluator", 1, {"CPU": ev["num_cpus"], "GPU": ev["num_gpus"]},
                           {"CPU": f"periodic_eval.cpus={cfg.periodic_eval.cpus:g}", "GPU": rollout_keys["GPU"]}))
    return out


def train(cfg: Config, table, pad_id: int, init_path: str, heldout: HeldoutSet) -> None:
    """Run the Ray Train worker group over the rollout stream until ``trainer.total_steps``.

    Where it starts (and restarts after a worker failure) is the run directory's resume point; ``init_path``:
    the initial policy (its tokenizer goes into every checkpoint; the frozen KL reference)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from actors.train_worker import train_loop_per_worker
    from pipeline.ingest import RolloutStreamConfig

    settings = trainer_settings(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"setup": TrainLoopSetup(
            cfg=cfg, initial_path=init_path, reference_path=init_path, tokenizer_path=init_path, pad_id=pad_id,
            logger_factory=make_logger_factory(cfg.run_dir, cfg.trainer.total_steps))},
        scaling_config=ScalingConfig(**settings["scaling"]),
        datasets={"rollouts": RestartableStream(cfg, ray.put(table), init_path, heldout)},
        dataset_config=RolloutStreamConfig("rollouts"),
        torch_config=TorchConfig(backend=settings["backend"]),
        run_config=RunConfig(storage_path=settings["storage_path"], name="train",
                             failure_config=FailureConfig(max_failures=settings["max_failures"])),
    )
    trainer.fit()


def heldout_accuracy(cfg: Config, model_path: str, heldout: HeldoutSet) -> dict:
    """Greedy accuracy of ``model_path`` on the held-out problems, in a vLLM Ray actor; with
    ``heldout.sample_k`` > 0 also pass@k and avg@k of k samples per problem (``pass_at_k``, ``avg_at_k``, ``k``)."""
    import ray

    from actors.rollout import GreedyEvaluator, heldout_request, heldout_sampling

    if not len(heldout):
        return {"accuracy": float("nan"), "n": 0}
    actor = GreedyEvaluator.options(**rollout_resources(cfg)).remote(model_path, engine_config(cfg),
                                                                     engines_on_cpu(cfg))
    try:
        return ray.get(actor.accuracy.remote(heldout.prompt_ids, heldout.golds, **heldout_request(cfg),
                                             sampling=heldout_sampling(cfg)))
    finally:
        ray.kill(actor)


def run(cfg: Config) -> dict:
    """The whole job; returns the summary written to ``<run_dir>/summary.json``."""
    t0 = time.time()
    faults.planned()  # a misspelt EAPO_FAULTS (fault tests) fails here, not in a worker
    ensure_dir(cfg.run_dir, "run_dir")
    init_path, tokenizer = prepare_policy(cfg)
    source = prepare_source(cfg, tokenizer)
    heldout = heldout_set(cfg, tokenizer)
    resume = resume_point(cfg.run_dir, cfg.trainer.checkpoint_checksums, log=say)  # verified before Ray starts
    start_step, model_path = resume if resume else (0, init_path)
    truncate_metrics(cfg.run_dir, start_step, log=say)
    require_metrics_through(cfg.run_dir, start_step, log=say)
    if resume:
        say(f"resuming from {model_path} (step {start_step})")
    init_ray(cfg)
    ensure_resources(resource_requests(cfg), cfg, log=say)
    import ray

    from actors.weights import get_or_create_store
    from pipeline.data import prompt_table, read_prompts

    table = prompt_table(read_prompts(source, init_path, cfg.data, *source_spec(cfg)[2:]),
                         cfg.data.max_prompt_tokens, log=say)
    say(f"{len(table['uid'])} training prompts from {source.uri}")
    before = _heldout_before(cfg, init_path, heldout)
    store = get_or_create_store(start_step, cfg.run_dir)
    final_step, final_path = start_step, model_path
    if start_step < cfg.trainer.total_steps:
        hang_s = cfg.trainer.hang_timeout_s
        monitor = HangMonitor(cfg.run_dir, hang_s, say).start() if hang_s else None
        try:
            train(cfg, table, tokenizer.pad_token_id, init_path, heldout)
        finally:
            if monitor is not None:
                monitor.stop()
                shutil.rmtree(os.path.join(cfg.run_dir, HEARTBEATS), ignore_errors=True)  # killed processes' files
        final_step, final_path = latest_checkpoint(cfg.run_dir)  # the last step's, just committed
    after = heldout_accuracy(cfg, final_path, heldout)
    ray.kill(store)
    summary = _summary(cfg, before, after, final_step, final_path, time.time() - t0)
    say(json.dumps(summary, indent=2))
    if summary["no_signal_steps"]:
        say(f"WARNING: {summary['no_signal_steps']} of {final_step} steps trained on nothing (no token carried "
            "signal, train/no_signal in metrics.jsonl; the console warnings above name the likely cause)")
    return summary


def _heldout_before(cfg: Config, init_path: str, heldout: HeldoutSet) -> dict:
    path = os.path.join(cfg.run_dir, "heldout_before.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                cached = json.load(f)
            if not cfg.heldout.sample_k or cached.get("k") == cfg.heldout.sample_k or not len(heldout):
                return cached
            say(f"{path} has no pass@{cfg.heldout.sample_k} (heldout.sample_k): measuring the initial policy again")
        except ValueError as err:
            say(f"WARNING: {path} is not valid JSON ({err}): measuring the initial policy again")
    result = heldout_accuracy(cfg, init_path, heldout)
    write_durably(path, json.dumps(result).encode())
    sampled = f", pass@{result['k']} {result['pass_at_k']:.3f}, avg@{result['k']} {result['avg_at_k']:.3f}" \
        if "k" in result else ""
    say(f"held-out greedy accuracy before RL: {result['accuracy']:.3f} on {result['n']} problems{sampled}")
    return result


def _mean_reward(rows: list[dict]) -> float:
    return sum(r["reward/mean"] for r in rows) / len(rows)


def no_signal_steps(metrics: list[dict]) -> int:
    """Steps whose optimizer step was skipped because no token carried signal (``train/no_signal``): a run with
    any is one that (partly) trained on nothing, not a data point."""
    return int(sum(m.get("train/no_signal", 0.0) for m in metrics))


def _summary(cfg: Config, before: dict, after: dict, steps: int, final_path: str, wall_s: float) -> dict:
    metrics = read_metrics(cfg.run_dir, log=say)
    timing_keys = [k for k in (metrics[0] if metrics else {}) if k.startswith("timing/")]
    summary = {
        "heldout_accuracy_before": before["accuracy"], "heldout_accuracy_after": after["accuracy"],
        "heldout_size": after["n"], "steps": steps, "wall_s": round(wall_s, 1), "final_checkpoint": final_path,
        "algorithm": cfg.algorithm.name,
        "mean_timings": {k: round(sum(m[k] for m in metrics) / len(metrics), 3) for k in timing_keys},
        "reward_first_last": [metrics[0]["reward/mean"], metrics[-1]["reward/mean"]] if metrics else None,
        "reward_first10_last10": [_mean_reward(metrics[:10]), _mean_reward(metrics[-10:])] if metrics else None,
        "seed": cfg.seed,
        "no_signal_steps": no_signal_steps(metrics),
    }
    if cfg.heldout.sample_k:  # pass@k / avg@k at the rollout temperature (fractions; None: not measured)
        summary["heldout_sample_k"] = cfg.heldout.sample_k
        for key in ("pass_at_k", "avg_at_k"):
            summary[f"heldout_{key}_before"], summary[f"heldout_{key}_after"] = before.get(key), after.get(key)
    summary["heldout_curve"] = [list(p) for p in zip(*heldout_curve(metrics, (steps, after["accuracy"])))]
    summary["plot"] = plot_training_curves(metrics, os.path.join(cfg.run_dir, "training_curves.png"),
                                           (steps, after["accuracy"]))
    write_durably(os.path.join(cfg.run_dir, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary


def _wrapped(exc: BaseException) -> list:
    """Exceptions ``exc`` wraps: Python's chain, a Ray task/actor error's ``cause``, Ray Train's
    ``WorkerGroupError.worker_failures`` (each a ``UserExceptionWithTraceback`` around the worker's own),
    ``ControllerError.controller_failure``."""
    inner = [getattr(exc, "cause", None), exc.__cause__, exc.__context__, getattr(exc, "_base_exc", None),
             getattr(exc, "controller_failure", None)]
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict):
        inner += [failures[rank] for rank in sorted(failures)]
    return [e for e in inner if isinstance(e, BaseException)]


def input_error(exc: BaseException) -> ConfigError | DataError | RunDirError | None:
    """The configuration, data or run-directory error behind ``exc`` (also when a Ray task, actor or Ray
    Train worker raised it and Ray wrapped it), or None for anything else."""
    seen, todo = set(), [exc]
    while todo:
        exc = todo.pop(0)
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, (ConfigError, DataError, RunDirError)):
            return exc
        todo += _wrapped(exc)
    return None


RESTARTS_EXHAUSTED = 3  # exit code of a run that ran out of worker-group restarts (trainer.max_failures)


def fail_cleanly(exc: BaseException, cfg: Config | None = None, argv: list[str] | None = None) -> None:
    """Configuration, data and run-directory errors (a damaged metrics.jsonl, no intact checkpoint, a full
    disk or a deleted run_dir while writing) end the job with one line ``error: ...`` on stderr and exit
    code 2; a worker group that failed once more than ``trainer.max_failures`` allows ends with one line
    (:func:`restarts_exhausted`) and exit code 3; anything else propagates with its traceback."""
    err = input_error(exc)
    if err is not None:
        fail(str(err) or type(err).__name__)
    if cfg is not None and _is_training_failure(exc):
        import sys

        print(f"error: {restarts_exhausted(exc, cfg, sys.argv if argv is None else argv)}", file=sys.stderr,
              flush=True)
        sys.exit(RESTARTS_EXHAUSTED)
    raise exc


def _is_training_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Ray Train's end of ``fit()`` after its restarts (``WorkerGroupError``)."""
    try:
        from ray.train import WorkerGroupError
    except ImportError:  # Ray Train v1
        from ray.train.base_trainer import TrainingFailedError as WorkerGroupError
    return isinstance(exc, WorkerGroupError)


def _died(rank: int, exc: BaseException) -> str:
    """``train worker rank R: <innermost error, first line>``."""
    inner = exc
    while _wrapped(inner):
        inner = _wrapped(inner)[0]
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return f"train worker rank {rank}: {type(inner).__name__}{': ' + text[:160] if text else ''}"


def restarts_exhausted(exc: BaseException, cfg: Config, argv: list[str]) -> str:
    """One line for a worker group that kept failing: what died (each failed rank and its error), that the
    ``trainer.max_failures`` restarts were used up, where the run stands and the command that resumes it."""
    import shlex

    failures = getattr(exc, "worker_failures", None) or {}
    died = "; ".join(_died(rank, failures[rank]) for rank in sorted(failures)) or str(exc).splitlines()[0]
    n = cfg.trainer.max_failures
    found = latest_checkpoint(cfg.run_dir)
    where = f"the newest checkpoint is step {found[0]} ({found[1]})" if found else "no checkpoint was written yet"
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "pipeline.run", *argv[1:]])
    return (f"training failed after {n} worker-group restart{'s' if n != 1 else ''} (trainer.max_failures={n}): "
            f"{died}; {where}; to resume, run the same command again ({command}), with a larger "
            "trainer.max_failures if the failures are expected")


@app(str(CONFIG_DIR), "config")
def main(hydra_cfg: DictConfig) -> None:
    cfg = None
    try:
        cfg = config_mod.resolve_paths(config_mod.load(hydra_cfg))
        run(cfg)
    except Exception as exc:  # noqa: BLE001 - config/data errors and exhausted restarts become one line
        fail_cleanly(exc, cfg)


if __name__ == "__main__":
    main()
