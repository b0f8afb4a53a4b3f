"""The shared-prompt training forward equals the plain one: log-probs, entropies and gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.policy_forward import shared_prompt_logprobs_entropy, token_logprobs_entropy
from core.batch import RolloutShard, collate


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from task.tiny_model import build_random_policy, tiny_spec

    path = build_random_policy(str(tmp_path_factory.mktemp("m")), seed=1,
                               spec=tiny_spec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                                  intermediate_size=128))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)


def batch_of_groups(seed: int, G: int, P: int, train_all: bool = True):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(5, 200, size=int(rng.integers(2, 9)))) for _ in range(P)]
    responses = [list(rng.integers(5, 200, size=int(rng.integers(1, 7)))) for _ in range(P * G)]
    shard = RolloutShard(step=0, shard=0, group_size=G, prompt_ids=prompts, golds=["0"] * P, response_ids=responses,
                         response_texts=[""] * len(responses), behaviour_logprobs=[[0.0] * len(r) for r in responses],
                         truncated=[False] * len(responses), weight_version=0,
                         rewards=np.zeros(P * G, np.float32), advantages=np.zeros(P * G, np.float32),
                         train_mask=None if train_all else np.repeat(rng.random(P) < 0.6, G))
    return collate([shard], pad_id=0)


@pytest.mark.parametrize("G,P,train_all", [(4, 3, True), (1, 5, True), (3, 4, False)])
def test_shared_prompt_forward_matches_plain(model, G, P, train_all):
    batch = batch_of_groups(G * 10 + P, G, P, train_all)
    ref_lp, ref_ent = token_logprobs_entropy(model, batch, 0.9, 7)
    (ref_lp.sum() + 0.3 * ref_ent.sum()).backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    lp, ent = shared_prompt_logprobs_entropy(model, batch, G, 0.9, 7)
    (lp.sum() + 0.3 * ent.sum()).backward()
    torch.testing.assert_close(lp, ref_lp, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ent, ref_ent, rtol=1e-9, atol=1e-9)
    for k, p in model.named_parameters():
        # Qwen2's RMSNorm computes in float32 even for a float64 model: agreement is to float32 precision
        torch.testing.assert_close(p.grad, ref_grads[k], rtol=1e-5, atol=1e-5, msg=k)
    model.zero_grad()
    assert (lp[~batch.response_mask.bool()] == 0).all() and lp[batch.response_mask.bool()].lt(0).all()


def test_shared_prompt_path_only_for_rows_that_share_prompts():
    from actors.policy_forward import groups_share_prompts

    batch = batch_of_groups(5, 4, 3)
    assert groups_share_prompts(batch, 4) and not groups_share_prompts(batch, 1)
    assert not groups_share_prompts(batch, 3)  # 12 rows, but runs of 3 straddle two prompts
    shifted = batch.rows(torch.arange(1, 9))  # rows 1..8: runs of 4 no longer align with the groups
    assert not groups_share_prompts(shifted, 4)
