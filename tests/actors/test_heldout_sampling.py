"""Held-out pass@k at the rollout temperature: the request and the scores against hand computation."""
from __future__ import annotations

import pytest

from actors.rollout import heldout_sampling, pass_at_k_scores
from pipeline.config import compose


def test_pass_at_k_and_avg_at_k_by_hand():
    """3 problems x 4 samples: correct counts 1, 0, 4. pass@4 (n = k: any correct) = (1 + 0 + 1) / 3;
    avg@4 = (1 + 0 + 4) / 12."""
    correct = [[False, True, False, False], [False] * 4, [True] * 4]
    out = pass_at_k_scores(correct)
    assert out["k"] == 4
    assert out["pass_at_k"] == pytest.approx(2 / 3) and out["avg_at_k"] == pytest.approx(5 / 12)


def test_the_sampling_request_follows_the_rollout_and_is_seeded():
    c = compose("heldout.sample_k=5", "rollout.temperature=0.7", "rollout.top_p=0.9", "heldout.max_tokens=20")
    req = heldout_sampling(c)
    assert {k: req[k] for k in ("n", "temperature", "top_p", "max_tokens")} == \
        {"n": 5, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20}
    assert req["seed"] == heldout_sampling(c)["seed"]  # before and after RL: the same random numbers
    assert req["seed"] != heldout_sampling(compose("heldout.sample_k=5", "seed=1"))["seed"]
    assert heldout_sampling(compose("heldout.sample_k=0")) is None
