import math

import pytest
import torch

from losses.advantages import compute_advantages, informative_groups


def loop_advantages(rewards, group_ids, kind, eps):
    r, g = rewards.tolist(), group_ids.tolist()
    out = []
    for i in range(len(r)):
        members = [r[j] for j in range(len(r)) if g[j] == g[i]]
        n = len(members)
        mean = sum(members) / n
        if kind == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in members) / (n - 1)) if n > 1 else 0.0
            out.append((r[i] - mean) / (std + eps))
        elif kind == "dr_grpo":
            out.append(r[i] - mean)
        elif kind == "rloo":
            out.append(r[i] - (sum(members) - r[i]) / (n - 1) if n > 1 else 0.0)
        else:
            out.append(r[i])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["grpo", "dr_grpo", "rloo", "reward"])
def test_matches_loop(kind):
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(13, generator=g, dtype=torch.float64)
    group_ids = torch.tensor([5, 5, 5, 9, 9, 9, 9, 2, 2, 7, 1, 1, 1])  # includes a singleton group 7
    out = compute_advantages(rewards, group_ids, kind, eps=1e-6)
    torch.testing.assert_close(out, loop_advantages(rewards, group_ids, kind, 1e-6), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["grpo", "dr_grpo", "rloo"])
def test_degenerate_groups_are_zero(kind):
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 3.0])
    group_ids = torch.tensor([0, 0, 0, 1, 1, 2])
    out = compute_advantages(rewards, group_ids, kind, eps=0.0)
    assert torch.isfinite(out).all()
    assert out.abs().max() == 0
    assert out.dtype == torch.float32


def test_grpo_values():
    out = compute_advantages(torch.tensor([1.0, 0.0]), torch.tensor([3, 3]), "grpo", eps=0.0)
    s = math.sqrt(0.5)
    torch.testing.assert_close(out, torch.tensor([0.5 / s, -0.5 / s]))


def test_unknown_estimator():
    with pytest.raises(ValueError, match="advantage_estimator"):
        compute_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), "nope")


def test_informative_groups():
    keep = informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert keep.tolist() == [False, False, True, True, False, False]


def test_overlong_penalty_matches_loop():
    from losses.reward_shaping import overlong_penalty

    lengths = torch.tensor([0, 50, 60, 61, 75, 100, 101, 400])
    out = overlong_penalty(lengths, max_length=100, cache_length=40)
    for n, v in zip(lengths.tolist(), out.tolist()):
        ref = 0.0 if n <= 60 else ((60 - n) / 40 if n <= 100 else -1.0)
        assert abs(v - ref) < 1e-6
