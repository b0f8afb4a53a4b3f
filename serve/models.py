"""``ServeConfig`` -> one Ray Serve LLM ``LLMConfig`` per served model (resources, autoscaling, engine kwargs)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

from serve.config import ServeConfig

# vLLM checks at start that gpu_memory_utilization of the machine's RAM is free when the engine runs on CPU,
# where the KV cache is sized by engine.kv_cache_gb instead: a small share keeps that check from failing.
CPU_GPU_MEMORY_UTILIZATION = 0.1


def _context_len(path: str) -> int:
    """The checkpoint's context length (``max_position_embeddings`` of its config.json)."""
    with open(os.path.join(path, "config.json")) as f:
        return int(json.load(f).get("max_position_embeddings", 2048))


def pin_newest_checkpoint(run_dir: str) -> str:
    """Hard links (or copies) of the newest complete checkpoint's files in a temporary folder.

    A followed model starts its engines from this copy, so a replica restarted after the training job
    rotated that checkpoint away still starts; it then loads the newest weights in place.
    """
    from core.run_dir import latest_checkpoint

    found = latest_checkpoint(run_dir)
    if found is None:
        raise ValueError(f"serve config: follow={run_dir!r} has no complete checkpoint under "
                         f"{os.path.join(run_dir, 'checkpoints')} yet; start serving once the job wrote one")
    pinned = tempfile.mkdtemp(prefix="eapo-follow-")
    for name in os.listdir(found[1]):
        src = os.path.join(found[1], name)
        if os.path.isfile(src):
            try:
                os.link(src, os.path.join(pinned, name))
            except OSError:
                shutil.copy2(src, pinned)
    return pinned


def llm_config(cfg: ServeConfig, model_id: str, path: str, follow_dir: str | None = None):
    """The ``LLMConfig`` of one model: CPU or GPU placement, autoscaling, health probe, engine kwargs."""
    from ray.serve.llm import LLMConfig

    cpu = cfg.on_cpu
    spec = cfg.engine
    if cpu and spec.max_model_len is None:  # a CPU engine needs it resolved (no chunked prefill: see core.engine)
        spec = dataclasses.replace(spec, max_model_len=_context_len(path))
    engine = spec.vllm_kwargs(cpu)
    if cpu:
        engine.setdefault("gpu_memory_utilization", CPU_GPU_MEMORY_UTILIZATION)
    bundle = {"CPU": cfg.replica_cpus} if cpu else {"CPU": cfg.replica_cpus, "GPU": 1}
    workers = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": path},
        placement_group_config={"bundles": [dict(bundle) for _ in range(workers)]},
        engine_kwargs=engine,
        deployment_config={
            "ray_actor_options": {"num_cpus": 0.05},
            "autoscaling_config": dataclasses.asdict(cfg.autoscaling),
            "max_ongoing_requests": cfg.max_ongoing_requests,
            "health_check_period_s": cfg.health.period_s,
            "health_check_timeout_s": cfg.health.probe_timeout_s + 10,
            "graceful_shutdown_timeout_s": 10,
        },
        server_cls="serve.server:ProbedLLMServer",
        experimental_configs={"eapo_probe_timeout_s": cfg.health.probe_timeout_s,
                              "eapo_follow_dir": follow_dir and os.path.abspath(follow_dir),
                              "eapo_follow_poll_s": cfg.follow_poll_s},
        log_engine_metrics=False,
    )


def llm_configs(cfg: ServeConfig) -> list:
    """Every model of ``cfg``: the static checkpoints, then the followed training run (if any)."""
    out = [llm_config(cfg, name, path) for name, path in sorted(cfg.models().items())]
    if cfg.follow:
        out.append(llm_config(cfg, cfg.follow_name, pin_newest_checkpoint(cfg.follow), cfg.follow))
    return out
