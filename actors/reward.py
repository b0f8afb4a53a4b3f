"""Scoring: verify sampled responses, shape their rewards, and compute group advantages.

Runs inside the rollout actor, right after sampling, so dynamic sampling can see the rewards of
the groups it just drew (and the trainer receives one finished stream, not two stages). The
verifier bounds each call in time and never executes model output (``evaluation.verifier``).

Reward of response i:  r_i = r_correct if the verifier accepts it else r_wrong,
plus, when ``algorithm.overlong_buffer`` L_cache > 0, DAPO's soft overlong punishment
(arXiv 2503.14476): r_i += factor · overlong_penalty(|o_i|, L_max, L_cache) with L_max = max_tokens.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from core.config import Config


class Scorer:
    """Verifier rewards, overlong shaping and the algorithm's group advantages (see module docstring)."""

    def __init__(self, cfg: Config):
        """From the run's config: ``algorithm`` (advantages, overlong shaping), ``rollout.reward_correct`` /
        ``reward_wrong``, ``rollout.verifier_timeout_s``, ``rollout.max_tokens`` (the overlong limit)."""
        from losses import build_algorithm

        r = cfg.rollout
        self.algo = build_algorithm(cfg.algorithm)
        self.correct, self.wrong, self.timeout_s = r.reward_correct, r.reward_wrong, r.verifier_timeout_s
        self.max_tokens = r.max_tokens

    def score(self, texts: list[str], golds: list[str], lengths: list[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(rewards [N] float32, correct [N] bool, verifier reasons [N]) for N responses and their golds."""
        from evaluation.verifier import verify_batch

        verdicts = verify_batch(texts, golds, timeout_s=self.timeout_s)
        correct = np.asarray([v.score > 0 for v in verdicts], bool)
        rewards = np.where(correct, self.correct, self.wrong).astype(np.float64)
        c = self.algo.config
        if c.overlong_buffer > 0 and c.overlong_penalty_factor != 0:
            import torch

            from losses.reward_shaping import overlong_penalty

            pen = overlong_penalty(torch.tensor(lengths), self.max_tokens, c.overlong_buffer).double().numpy()
            rewards = rewards + c.overlong_penalty_factor * pen
        return rewards.astype(np.float32), correct, [v.reason for v in verdicts]

    def advantages(self, rewards: np.ndarray, group_size: int) -> np.ndarray:
        """Sequence-level advantages [N] of consecutive groups of ``group_size`` responses."""
        import torch

        groups = torch.arange(len(rewards)) // group_size
        return self.algo.compute_advantages(torch.from_numpy(rewards), groups).numpy()


def verdict_counts(shards) -> dict[str, float]:
    """Share of each verifier reason over the responses of ``shards`` (``verifier/<reason>``)."""
    counts = Counter(r for s in shards for r in s.verdicts)
    total = max(1, sum(counts.values()))
    return {f"verifier/{reason}": n / total for reason, n in counts.items()}
