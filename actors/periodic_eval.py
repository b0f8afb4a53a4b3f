"""Periodic benchmark evaluation of checkpoints during training (avg@k / pass@k).

Every ``periodic_eval.every`` steps, rank 0 of the train worker group starts a vLLM engine on the
checkpoint it just wrote, samples ``n`` responses per problem of each configured benchmark
(loaded by ``evaluation.benchmarks``, scored by ``evaluation.verifier``, summarised by
``evaluation.metrics``) and logs ``eval/<benchmark>/avg@k`` and ``pass@k`` with the step's
metrics. The evaluator asks Ray for ``cpus`` (0 by default: it runs while the rollout actors wait
for the new weights, so it borrows their CPU rather than reserving one the stream needs).
"""
from __future__ import annotations

import ray

from actors.rollout import make_engine
from core.engine import EngineConfig


@ray.remote
class BenchmarkEvaluator:
    """One vLLM engine on one checkpoint; scores prompt sets with n samples each."""

    def __init__(self, model_path: str, engine: EngineConfig, on_cpu: bool):
        self.llm = make_engine(model_path, engine, on_cpu)

    def scores(self, prompt_ids: list[list[int]], golds: list[str], sampling: dict, timeout_s: float) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from evaluation.verifier import verify_batch

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], SamplingParams(**sampling),
                                 use_tqdm=False)
        texts = [[s.text for s in o.outputs] for o in outs]
        flat = verify_batch([t for ts in texts for t in ts], [g for g, ts in zip(golds, texts) for _ in ts],
                            timeout_s=timeout_s)
        n = sampling["n"]
        return [[v.score for v in flat[i * n:(i + 1) * n]] for i in range(len(golds))]


def benchmark_prompts(name: str, tokenizer, data_dir: str, limit: int | None) -> tuple[list[list[int]], list[str]]:
    """Chat-templated, tokenised prompts and gold answers of one benchmark."""
    from evaluation.benchmarks import load_benchmark

    problems = load_benchmark(name, data_dir, limit=limit)
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False) for p in problems]
    return [list(map(int, x)) for x in ids], [p.gold for p in problems]


def eval_sampling(cfg) -> dict:
    """``SamplingParams`` arguments of the benchmark evaluation (``periodic_eval.*``, the run's ``seed``)."""
    pe = cfg.periodic_eval
    return {"n": pe.n, "temperature": pe.temperature, "top_p": pe.top_p, "max_tokens": pe.max_tokens, "seed": cfg.seed}


def evaluator_resources(cfg) -> dict:
    """Ray resources of the evaluator actor: ``periodic_eval.cpus`` CPUs, the rollout engines' GPUs."""
    return {"num_cpus": cfg.periodic_eval.cpus, "num_gpus": cfg.rollout.gpus_per_actor}


def eval_problems(cfg, name: str, tokenizer) -> tuple[list[list[int]], list[str], int]:
    """(prompt ids, golds, problems skipped) of benchmark ``name`` for ``cfg.periodic_eval``: the first
    ``limit`` problems under ``data_dir``, less those whose prompt plus ``max_tokens`` exceeds
    ``rollout.max_model_len``."""
    pe = cfg.periodic_eval
    prompts, golds = benchmark_prompts(name, tokenizer, cfg.data_dir, pe.limit)
    fits = [i for i, p in enumerate(prompts) if len(p) + pe.max_tokens <= cfg.rollout.max_model_len]
    return [prompts[i] for i in fits], [golds[i] for i in fits], len(prompts) - len(fits)


def eval_plan(cfg, tokenizer) -> dict[str, tuple[list[list[int]], list[str], int]]:
    """:func:`eval_problems` of every benchmark in ``periodic_eval.benchmarks``."""
    return {name: eval_problems(cfg, name, tokenizer) for name in cfg.periodic_eval.benchmarks}


def summarise_scores(cfg, name: str, scores: list[list[float]]) -> dict[str, float]:
    """``eval/<name>/avg@k`` and ``pass@k`` (percent, k = ``periodic_eval.k``) of per-problem sample scores."""
    from evaluation.metrics import benchmark_metrics

    k = cfg.periodic_eval.k
    m = benchmark_metrics(scores, k)
    return {f"eval/{name}/avg@{k}": m["avg"], f"eval/{name}/pass@{k}": m["pass"]}


def evaluate_checkpoint(cfg, checkpoint: str) -> dict[str, float]:
    """``eval/<benchmark>/avg@k`` and ``pass@k`` (percent) of ``checkpoint`` for ``cfg.periodic_eval``.

    Problems whose prompt plus ``max_tokens`` exceeds ``rollout.max_model_len`` are left out and
    counted (``eval/<benchmark>/skipped_too_long``); ``num_problems`` is what the scores cover.
    """
    from transformers import AutoTokenizer

    from core.engine import engine_config, engines_on_cpu

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    actor = BenchmarkEvaluator.options(**evaluator_resources(cfg)).remote(checkpoint, engine_config(cfg),
                                                                          engines_on_cpu(cfg))
    out: dict[str, float] = {}
    try:
        for name, (prompts, golds, skipped) in eval_plan(cfg, tokenizer).items():
            out[f"eval/{name}/num_problems"] = float(len(prompts))
            out[f"eval/{name}/skipped_too_long"] = float(skipped)
            if not prompts:
                continue
            scores = ray.get(actor.scores.remote(prompts, golds, eval_sampling(cfg), cfg.rollout.verifier_timeout_s))
            out.update(summarise_scores(cfg, name, scores))
    finally:
        ray.kill(actor)
    return out
