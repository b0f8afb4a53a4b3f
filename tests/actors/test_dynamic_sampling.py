"""DAPO dynamic sampling: which groups a shard keeps, how many rounds it draws, what it reports."""
from __future__ import annotations

import numpy as np

from actors.dynamic_sampling import Group, select_groups


def group(tag: str, rewards) -> Group:
    r = np.asarray(rewards, np.float32)
    return Group(prompt_ids=[len(tag)], gold=tag, response_ids=[[1]] * len(r), texts=[tag] * len(r),
                 logprobs=[[0.0]] * len(r), truncated=[False] * len(r), rewards=r, correct=r > 0,
                 reasons=["x"] * len(r))


def rounds_of(*rounds):
    calls = []

    def sample_round(r):
        calls.append(r)
        return rounds[r - 1]

    return sample_round, calls


def test_disabled_keeps_everything_and_draws_nothing():
    first = [group("a", [1, 1]), group("b", [0, 1])]
    sample, calls = rounds_of()
    sel = select_groups(first, sample, enabled=False, max_rounds=3)
    assert sel.groups == first and sel.train == [True, True] and calls == []
    assert (sel.filtered_groups, sel.extra_rounds, sel.unfilled) == (0, 0, 0)


def test_drops_equal_reward_groups_and_tops_up_in_draw_order():
    first = [group("a", [1, 1]), group("b", [0, 1]), group("c", [0, 0])]
    sample, calls = rounds_of([group("d", [0, 0]), group("e", [1, 0]), group("f", [0, 1])])
    sel = select_groups(first, sample, enabled=True, max_rounds=3)
    assert [g.gold for g in sel.groups] == ["b", "e", "f"] and sel.train == [True] * 3
    assert calls == [1] and sel.extra_rounds == 1
    assert (sel.sampled_groups, sel.filtered_groups, sel.unfilled) == (6, 3, 0)


def test_bound_on_rounds_keeps_the_shape_with_untrained_groups():
    first = [group("a", [1, 1]), group("b", [0, 1]), group("c", [0, 0])]
    sample, calls = rounds_of([group("d", [0, 0])] * 3, [group("e", [1, 1])] * 3)
    sel = select_groups(first, sample, enabled=True, max_rounds=2)
    assert calls == [1, 2] and sel.extra_rounds == 2
    assert [g.gold for g in sel.groups] == ["b", "a", "c"] and sel.train == [True, False, False]
    assert sel.unfilled == 2 and sel.filtered_groups == 8 and sel.sampled_groups == 9


def test_overlong_shaping_makes_a_group_informative():
    # equal correctness but different (length-shaped) rewards: the group has A != 0, so it is kept
    assert group("a", [1.0, 0.75]).informative and not group("b", [0.5, 0.5]).informative
