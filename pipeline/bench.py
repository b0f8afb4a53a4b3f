"""``python -m pipeline.bench``: how close the RL step comes to the speed of its slowest stage.

For each ``bench.staleness`` setting the real pipeline (Ray Data → vLLM rollout actor → Ray Train +
DeepSpeed) trains ``bench.steps`` steps; the per-step timings after ``bench.warmup`` steps give medians
of every stage and of the whole step, and

    overhead = step − (rollout + reward + train + weight_sync)      (what no stage accounts for)
    ratio    = step / (rollout + reward + train + weight_sync)      on-policy: the stages run in sequence
    ratio    = step / max(rollout + reward, train)                  staleness ≥ 1: they can overlap

One JSON line per setting on stdout (and appended to ``bench.out``), with ``no_signal_steps``: steady steps that
trained on nothing (no token carried signal, the optimizer step skipped: e.g. every response cut at a small
``rollout.max_tokens``), whose train stage is not that of a real step. Configuration: configs/bench.yaml.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics

from omegaconf import DictConfig, OmegaConf

from core.cli import app
from core.config_files import CONFIG_DIR
from pipeline import config as config_mod  # before Hydra composes: registers the presets' resolver

STAGES = ("rollout_s", "reward_s", "train_s", "weight_sync_s", "step_s", "weight_wait_s", "data_wait_s",
          "handoff_s", "log_s")


def summarise(rows: list[dict], staleness: int, warmup: int) -> dict:
    """Medians of the timed stages over the steady steps, the overhead and the ratio (module docstring)."""
    steady = rows[warmup:] or rows
    med = {k: statistics.median(r[f"timing/{k}"] for r in steady) for k in STAGES if f"timing/{k}" in steady[0]}
    stages = med["rollout_s"] + med["reward_s"] + med["train_s"] + med["weight_sync_s"]
    bound = stages if staleness == 0 else max(med["rollout_s"] + med["reward_s"], med["train_s"])
    return {"staleness": staleness, "steady_steps": len(steady), "median_s": {k: round(v, 4) for k, v in med.items()},
            "overhead_s": round(med["step_s"] - stages, 4), "overhead_share": round(1 - stages / med["step_s"], 4),
            "ratio": round(med["step_s"] / bound, 4), "ratio_to": "sum of stages" if staleness == 0 else
            "max(rollout + reward, train)",
            "weight_version_lag": statistics.median(r["rollout/weight_version_lag"] for r in steady),
            "no_signal_steps": int(sum(r.get("train/no_signal", 0.0) for r in steady))}


def bench(cfg, settings: list[int], warmup: int) -> list[dict]:
    """Train ``cfg`` once per staleness setting in this process's Ray; returns the summaries."""
    import ray

    from actors.weights import get_or_create_store
    from pipeline.data import prompt_table, read_prompts
    from core.stages import HeldoutSet
    from pipeline.run import train
    from core.run_dir import ensure_dir, read_metrics
    from pipeline.setup import init_ray, prepare_policy, prepare_source, source_spec

    ensure_dir(cfg.run_dir, "run_dir")
    init_path, tokenizer = prepare_policy(cfg)
    source = prepare_source(cfg, tokenizer)
    init_ray(cfg)
    table = prompt_table(read_prompts(source, init_path, cfg.data, *source_spec(cfg)[2:]), cfg.data.max_prompt_tokens)
    root, out = cfg.run_dir, []
    for staleness in settings:
        cfg.run_dir, cfg.rollout.staleness = os.path.join(root, f"staleness{staleness}"), staleness
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        store = get_or_create_store(0)
        train(cfg, table, tokenizer.pad_token_id, init_path, HeldoutSet([], []))
        ray.kill(store)
        out.append(summarise(read_metrics(cfg.run_dir), staleness, warmup))
    return out


@app(str(CONFIG_DIR), "bench")
def main(hydra_cfg: DictConfig) -> None:
    from pipeline.run import fail_cleanly

    b = OmegaConf.to_container(hydra_cfg.bench)
    job = OmegaConf.to_container(hydra_cfg, resolve=True)
    job.pop("bench")
    job["trainer"]["total_steps"] = b["steps"]
    try:
        lines = bench(config_mod.resolve_paths(config_mod.load(job)), list(b["staleness"]), b["warmup"])
    except Exception as exc:  # noqa: BLE001 - config/data errors become one line, the rest re-raises
        fail_cleanly(exc)
    for line in lines:
        text = json.dumps(line)
        print(text, flush=True)
        if b["out"]:
            with open(b["out"], "a") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
