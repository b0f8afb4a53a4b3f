"""``python -m pipeline.bench``: the RL step's time and work, against its slowest stage and an in-run baseline.

For each ``bench.staleness`` setting the real pipeline (Ray Data → vLLM rollout actor → Ray Train +
DeepSpeed) trains ``bench.steps`` steps. The steps after ``bench.warmup`` that trained tokens
(``train/tokens_trained`` > 0) are *counted*; every figure is over them (``pipeline.bench_summary``):

    medians of every stage and of the whole step, and
    overhead = step − (rollout + reward + train + weight_sync)      (what no stage accounts for)
    ratio    = step / (rollout + reward + train + weight_sync)      on-policy: the stages run in sequence
    ratio    = step / max(rollout + reward, train)                  staleness ≥ 1: they can overlap

and the work: tokens generated (every dynamic-sampling round) and tokens trained per step (median, total),
groups kept, rollout rounds, generation tokens/s (generated / rollout_s) and training tokens/s (trained /
train_s). ``no_signal_steps``: steady steps that trained on nothing, left out of the figures.

With ``bench.baseline`` the same process first runs ``pipeline.bench_baseline`` — Hugging Face ``generate`` +
a plain token-mean policy-gradient loss + one AdamW step, on the same policy, the same steps' prompts, ``rollout.n``,
``rollout.max_tokens`` and temperature, ``bench.steps`` steps with the same warm-up — and every setting reports
``ratio_to_baseline`` = its median step / the baseline's median step (below 1: the pipeline is faster).

One JSON line per setting (the baseline's first) on stdout, also appended to ``bench.out``. Exit code 1 with one
``error:`` line when a setting or the baseline has no counted step (nothing trained: the figures would time no
learning). Configuration: configs/bench.yaml.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from core.cli import app
from core.config_files import CONFIG_DIR
from pipeline import config as config_mod  # before Hydra composes: registers the presets' resolver
from pipeline.bench_summary import nothing_trained, ratio_to_baseline, summarise, summarise_baseline


@dataclass
class BenchConfig:
    """``bench.*``; values and their trade-offs: configs/bench.yaml."""

    steps: int
    warmup: int
    staleness: list[int]
    baseline: bool
    out: Optional[str]


def load_bench(raw: dict) -> BenchConfig:
    """``bench`` mapping -> validated :class:`BenchConfig` (a :class:`~core.typed.ConfigError` names the key)."""
    from core.typed import ConfigError, build, require

    try:
        b = build(BenchConfig, raw)
    except ConfigError as err:
        raise err.under("bench") from None
    require(b.steps > 0, "bench.steps", f"must be > 0, got {b.steps}")
    require(0 <= b.warmup < b.steps, "bench.warmup", f"must be in [0, bench.steps={b.steps}), got {b.warmup}: "
                                                     "no steady step would be left")
    require(bool(b.staleness) and min(b.staleness) >= 0 and len(set(b.staleness)) == len(b.staleness),
            "bench.staleness", f"must list distinct settings >= 0, got {b.staleness}")
    return b


def bench(cfg, settings: list[int], warmup: int, baseline: bool = True) -> list[dict]:
    """Train ``cfg`` once per staleness setting in this process's Ray (after the in-run baseline when
    ``baseline``); returns the summaries, the baseline's first."""
    import ray
    import torch

    from actors.weights import get_or_create_store
    from core.run_dir import ensure_dir, read_metrics
    from core.stages import HeldoutSet
    from pipeline.bench_baseline import run_baseline
    from pipeline.data import prompt_table, read_prompts
    from pipeline.run import train
    from pipeline.setup import init_ray, prepare_policy, prepare_source, say, source_spec

    ensure_dir(cfg.run_dir, "run_dir")
    init_path, tokenizer = prepare_policy(cfg)
    source = prepare_source(cfg, tokenizer)
    init_ray(cfg)
    table = prompt_table(read_prompts(source, init_path, cfg.data, *source_spec(cfg)[2:]), cfg.data.max_prompt_tokens)
    root, out, base = cfg.run_dir, [], None
    if baseline:
        say(f"baseline: {cfg.trainer.total_steps} steps of HF generate + AdamW in this process")
        rows = run_baseline(cfg, init_path, tokenizer, table, cfg.trainer.total_steps)
        base = summarise_baseline(rows, warmup, torch.get_num_threads())
        out.append(base)
    for staleness in settings:
        cfg.run_dir, cfg.rollout.staleness = os.path.join(root, f"staleness{staleness}"), staleness
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        store = get_or_create_store(0)
        train(cfg, table, tokenizer.pad_token_id, init_path, HeldoutSet([], []))
        ray.kill(store)
        summary = summarise(read_metrics(cfg.run_dir), staleness, warmup)
        if base is not None:
            summary["ratio_to_baseline"] = ratio_to_baseline(summary, base)
            summary["baseline_step_s"] = base.get("median_s", {}).get("step_s")
        out.append(summary)
    return out


@app(str(CONFIG_DIR), "bench")
def main(hydra_cfg: DictConfig) -> None:
    from core.cli import fail
    from core.typed import ConfigError
    from pipeline.run import fail_cleanly

    try:
        b = load_bench(OmegaConf.to_container(hydra_cfg.bench))
    except ConfigError as err:
        fail(str(err))
    job = OmegaConf.to_container(hydra_cfg, resolve=True)
    job.pop("bench")
    job["trainer"]["total_steps"] = b.steps
    try:
        lines = bench(config_mod.resolve_paths(config_mod.load(job)), list(b.staleness), b.warmup, b.baseline)
    except Exception as exc:  # noqa: BLE001 - config/data errors become one line, the rest re-raises
        fail_cleanly(exc)
    for line in lines:
        text = json.dumps(line)
        print(text, flush=True)
        if b.out:
            with open(b.out, "a") as f:
                f.write(text + "\n")
    problem = nothing_trained(lines)
    if problem:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
