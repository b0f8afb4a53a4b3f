"""``core.batch.collate``: rollout shards -> one right-padded TrainBatch (what every train worker step starts from)."""
from __future__ import annotations

import numpy as np
import torch

from core.batch import RolloutShard, collate

PAD = 0


def shard(index: int, prompts, responses, logprobs, rewards, train_mask=None) -> RolloutShard:
    g = len(responses) // len(prompts)
    return RolloutShard(step=0, shard=index, group_size=g, prompt_ids=prompts, golds=["1"] * len(prompts),
                        response_ids=responses, response_texts=[""] * len(responses), behaviour_logprobs=logprobs,
                        truncated=[False] * len(responses), weight_version=0,
                        rewards=np.asarray(rewards, np.float32), advantages=np.asarray(rewards, np.float32) - 0.5,
                        train_mask=None if train_mask is None else np.asarray(train_mask, bool))


def two_shards():
    a = shard(0, prompts=[[11, 12, 13], [21]], responses=[[31, 32], [33], [41, 42, 43, 44], [45]],
              logprobs=[[-0.1, -0.2], [-0.3], [-1.0, -1.1, -1.2, -1.3], [-1.4]], rewards=[1, 0, 0, 1])
    # the second shard's second group was kept only for shape by dynamic sampling: no gradient
    b = shard(1, prompts=[[51, 52], [61, 62, 63, 64, 65]], responses=[[71], [72, 73], [81, 82], [83]],
              logprobs=[[-2.0], [-2.1, -2.2], [-3.0, -3.1], [-3.2]], rewards=[1, 1, 0, 0],
              train_mask=[True, True, False, False])
    return [a, b]


def test_shapes_padding_and_labels():
    shards = two_shards()
    batch = collate(shards, PAD)
    seqs = [p + r for s in shards for i, r in enumerate(s.response_ids) for p in [s.prompt_ids[i // s.group_size]]]
    B, L = len(seqs), max(map(len, seqs))
    assert batch.input_ids.shape == (B, L) and batch.attention_mask.shape == (B, L)
    for name in ("labels", "response_mask", "behaviour_logprobs"):
        assert getattr(batch, name).shape == (B, L - 1), name
    for name in ("advantages", "rewards", "group_ids", "prompt_lengths"):
        assert getattr(batch, name).shape == (B,), name
    assert batch.input_ids.dtype == batch.labels.dtype == batch.group_ids.dtype == torch.long
    assert batch.response_mask.dtype == batch.behaviour_logprobs.dtype == torch.float32
    for b, seq in enumerate(seqs):
        assert batch.input_ids[b, : len(seq)].tolist() == seq
        assert (batch.input_ids[b, len(seq):] == PAD).all()
        assert batch.attention_mask[b].tolist() == [1] * len(seq) + [0] * (L - len(seq))
    assert torch.equal(batch.labels, batch.input_ids[:, 1:])


def test_response_mask_and_behaviour_logprobs_sit_on_the_response_tokens():
    shards = two_shards()
    batch = collate(shards, PAD)
    b = 0
    for s in shards:
        keep = s.train_mask if s.train_mask is not None else np.ones(s.num_responses, bool)
        for i, response in enumerate(s.response_ids):
            n_prompt = len(s.prompt_ids[i // s.group_size])
            assert batch.prompt_lengths[b] == n_prompt
            cols = torch.nonzero(batch.response_mask[b]).flatten().tolist()
            if keep[i]:
                # label t predicts input t+1: the response occupies labels [n_prompt-1, n_prompt-1+len)
                assert cols == list(range(n_prompt - 1, n_prompt - 1 + len(response)))
                assert batch.labels[b, cols].tolist() == response
            else:  # rows left in for shape: no response token counts
                assert cols == []
            lp = batch.behaviour_logprobs[b, n_prompt - 1: n_prompt - 1 + len(response)]
            torch.testing.assert_close(lp, torch.tensor(s.behaviour_logprobs[i]))
            assert batch.behaviour_logprobs[b].abs().sum() == lp.abs().sum()  # 0 elsewhere
            b += 1


def test_groups_rewards_and_advantages_line_up_with_rows():
    shards = two_shards()
    batch = collate(shards, PAD)
    g = batch.group_ids.tolist()
    assert g[0] == g[1] and g[2] == g[3] and g[4] == g[5] and g[6] == g[7]
    assert len({g[0], g[2], g[4], g[6]}) == 4  # unique per prompt across shards
    assert batch.rewards.tolist() == [1, 0, 0, 1, 1, 1, 0, 0]
    torch.testing.assert_close(batch.advantages, batch.rewards - 0.5)
    sub = batch.rows(slice(2, 6))
    assert sub.size == 4 and torch.equal(sub.input_ids, batch.input_ids[2:6])
