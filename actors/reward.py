"""Scoring: verify every response of a rollout shard and compute its group advantages.

A Ray Data callable placed after the rollout pool; it runs as ordinary (fractional-CPU) tasks so
verification of one shard overlaps sampling of the next. The verifier bounds each call in time
and never executes model output (``evaluation.verifier``).
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np


class ScoreShards:
    """``{"payload": [RolloutShard]}`` -> same shards with ``rewards``, ``verdicts``, ``advantages``."""

    def __init__(self, algorithm_cfg: dict, reward_correct: float, reward_wrong: float, timeout_s: float):
        from losses import build_algorithm

        self.algo = build_algorithm(algorithm_cfg)
        self.correct, self.wrong, self.timeout_s = reward_correct, reward_wrong, timeout_s

    def __call__(self, batch: dict) -> dict:
        import torch

        from evaluation.verifier import verify_batch

        for shard in batch["payload"]:
            t0 = time.perf_counter()
            golds = [shard.golds[i // shard.group_size] for i in range(shard.num_responses)]
            verdicts = verify_batch(shard.response_texts, golds, timeout_s=self.timeout_s)
            rewards = np.asarray([self.correct if v.score > 0 else self.wrong for v in verdicts], np.float32)
            groups = torch.arange(shard.num_responses) // shard.group_size
            shard.rewards = rewards
            shard.verdicts = [v.reason for v in verdicts]
            shard.advantages = self.algo.compute_advantages(torch.from_numpy(rewards), groups).numpy()
            shard.timings["reward_s"] = time.perf_counter() - t0
        return batch


def verdict_counts(shards) -> dict[str, float]:
    """Share of each verifier reason over the responses of ``shards`` (``verifier/<reason>``)."""
    counts = Counter(r for s in shards for r in s.verdicts)
    total = max(1, sum(counts.values()))
    return {f"verifier/{reason}": n / total for reason, n in counts.items()}
