"""Shared random batches for the losses tests (float64, with padding and degenerate rows)."""
import pytest
import torch


def make_batch(seed=0, B=8, T=7, G=4, dtype=torch.float64):
    """Random batch: advantages [B,T], entropy [B,T], old_logprobs [B,T], mask [B,T] bool, group_ids [B].

    Row lengths vary (one 1-token row, one all-padding row); padding holds NaN garbage in entropy.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[1], lengths[-1] = 1, 0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    group_ids = torch.arange(B) // G + 100
    rewards = torch.randint(0, 2, (B,), generator=g).to(dtype) * 2 - 1
    adv_seq = torch.randn(B, generator=g, dtype=dtype)
    adv_seq[0] = 0.0
    advantages = adv_seq[:, None].expand(B, T).clone() * mask
    entropy = torch.rand(B, T, generator=g, dtype=dtype) * 3
    entropy[~mask] = float("nan")
    old_logprobs = -torch.rand(B, T, generator=g, dtype=dtype) * 4
    return dict(advantages=advantages, entropy=entropy, old_logprobs=old_logprobs, mask=mask,
                group_ids=group_ids, rewards=rewards)


@pytest.fixture
def batch():
    return make_batch()
