"""Evaluation runner: sample, verify, aggregate, report. ``evaluate(cfg)`` is the Python entry point."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from core.run_dir import ensure_dir
from evaluation.benchmarks import load_benchmark
from evaluation.config import PAPER_BENCHMARKS, EvalConfig, to_eval_config
from evaluation.metrics import benchmark_metrics
from evaluation.report import write_outputs
from evaluation.sampler import ResponseCache, base_url, sample_all
from evaluation.verifier import verify_batch


def default_output_dir(cfg: EvalConfig) -> Path:
    """``eval_results/<model>-<hash>``: the same for the same endpoint, model and benchmarks, so that
    re-running the same command finds its cache and resumes."""
    ident = json.dumps([base_url(cfg.endpoint), cfg.model, cfg.benchmarks])
    return Path("eval_results") / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', cfg.model)}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def _run_async(coro):
    """Run ``coro`` even when the caller already has an event loop (e.g. inside a Ray actor)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _score_benchmark(name: str, problems, texts, cfg: EvalConfig, skipped) -> dict:
    """Avg@k / Pass@k over the problems that were sampled; skipped ones are counted, not scored."""
    kept = [(p, per) for p, per in zip(problems, texts) if per is not None]
    counts = {"skipped_too_long": sum(p.id in skipped.too_long for p in problems),
              "rejected": sum(p.id in skipped.rejected for p in problems)}
    if not kept:
        return {"avg": None, "pass": None, "k": cfg.k_for(name), "n": cfg.n_for(name), "num_problems": 0,
                "reasons": {}, **counts}
    responses = [t for _, per in kept for t in per]
    verdicts = verify_batch(responses, [p.gold for p, per in kept for _ in per], timeout_s=cfg.verifier_timeout_s)
    per_problem, i = [], 0
    for _, per in kept:
        per_problem.append([v.score for v in verdicts[i : i + len(per)]])
        i += len(per)
    metrics = benchmark_metrics(per_problem, cfg.k_for(name))
    metrics["reasons"] = dict(Counter(v.reason for v in verdicts))
    return {**metrics, **counts}


def evaluate(cfg: Any) -> dict:
    """Evaluate ``cfg.model`` at ``cfg.endpoint`` on ``cfg.benchmarks``; write and return the results.

    ``cfg`` is an ``EvalConfig``, a dict or a DictConfig with the fields of configs/eval/eval.yaml.
    Returns ``{"model", "endpoint", "benchmarks": {name: {avg, pass, k, n, num_problems, skipped_too_long,
    rejected, reasons}}, "avg", "avg_over", "outputs"}`` with accuracies in percent; "avg" is the mean
    Avg@k over the paper's six benchmarks among those evaluated (over all evaluated ones when none of
    the six is). Each request's ``max_tokens`` is ``cfg.max_tokens`` capped to the model's context after
    the prompt; problems whose prompt leaves no room are counted in ``skipped_too_long`` (and a 400 for
    one problem in ``rejected``), not scored. Raises ``EndpointError`` (one line) if the endpoint is
    down, refuses the key or does not serve the model.
    """
    cfg = to_eval_config(cfg)
    out_dir = Path(ensure_dir(cfg.output_dir or str(default_output_dir(cfg)), "output_dir"))  # before any request
    cache_dir = ensure_dir(cfg.cache_dir or str(out_dir / "cache"), "cache_dir" if cfg.cache_dir else "output_dir")
    cache = ResponseCache(Path(cache_dir) / "responses.jsonl")
    suites = {b: load_benchmark(b, cfg.data_dir, cfg.prompt_template, cfg.limit_for(b)) for b in cfg.benchmarks}
    jobs = [(p, cfg.n_for(b)) for b, probs in suites.items() for p in probs]
    from tqdm import tqdm

    try:
        with tqdm(total=len(jobs), desc=f"eval {cfg.model}", unit="req") as bar:
            texts, skipped = _run_async(sample_all(cfg, jobs, cache, bar))
    finally:
        cache.close()
    results: dict = {"model": cfg.model, "endpoint": cfg.endpoint, "benchmarks": {}}
    i = 0
    for name, problems in suites.items():
        results["benchmarks"][name] = _score_benchmark(name, problems, texts[i : i + len(problems)], cfg, skipped)
        i += len(problems)
    results["rejected_examples"] = dict(list(skipped.rejected.items())[:5])
    scored = [b for b, m in results["benchmarks"].items() if m["avg"] is not None]
    over = [b for b in scored if b in PAPER_BENCHMARKS] or scored
    results["avg"] = sum(results["benchmarks"][b]["avg"] for b in over) / len(over) if over else None
    results["avg_over"] = over
    results["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "api_key"}
    results["outputs"] = write_outputs(results, out_dir, cfg.plot)
    return results
