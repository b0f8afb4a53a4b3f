"""DAPO dynamic sampling: which groups a shard keeps, how many rounds it draws, what it reports."""
from __future__ import annotations

import numpy as np
import pytest

from actors.dynamic_sampling import Group, select_groups


def group(tag: str, rewards, correct=None) -> Group:
    r = np.asarray(rewards, np.float32)
    correct = r > 0 if correct is None else np.asarray(correct, bool)
    return Group(prompt_ids=[len(tag)], gold=tag, response_ids=[[1]] * len(r), texts=[tag] * len(r),
                 logprobs=[[0.0]] * len(r), truncated=[False] * len(r), rewards=r, correct=correct,
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
    sel = select_groups(first, sample, enabled=False, max_rounds=3, metric="accuracy")
    assert sel.groups == first and sel.train == [True, True] and calls == []
    assert (sel.filtered_groups, sel.extra_rounds, sel.unfilled) == (0, 0, 0)


@pytest.mark.parametrize("metric", ["accuracy", "reward"])
def test_drops_equal_groups_and_tops_up_in_draw_order(metric):
    first = [group("a", [1, 1]), group("b", [0, 1]), group("c", [0, 0])]
    sample, calls = rounds_of([group("d", [0, 0]), group("e", [1, 0]), group("f", [0, 1])])
    sel = select_groups(first, sample, enabled=True, max_rounds=3, metric=metric)
    assert [g.gold for g in sel.groups] == ["b", "e", "f"] and sel.train == [True] * 3
    assert calls == [1] and sel.extra_rounds == 1
    assert (sel.sampled_groups, sel.filtered_groups, sel.unfilled) == (6, 3, 0)


def test_bound_on_rounds_keeps_the_shape_with_untrained_groups():
    first = [group("a", [1, 1]), group("b", [0, 1]), group("c", [0, 0])]
    sample, calls = rounds_of([group("d", [0, 0])] * 3, [group("e", [1, 1])] * 3)
    sel = select_groups(first, sample, enabled=True, max_rounds=2, metric="accuracy")
    assert calls == [1, 2] and sel.extra_rounds == 2
    assert [g.gold for g in sel.groups] == ["b", "a", "c"] and sel.train == [True, False, False]
    assert sel.unfilled == 2 and sel.filtered_groups == 8 and sel.sampled_groups == 9


def test_the_filter_metric_decides_whether_overlong_shaping_alone_is_signal():
    # equal correctness, rewards apart only by the length penalty: signal for `reward`, none for `accuracy`
    shaped = group("a", [1.0, 0.75], correct=[True, True])
    assert shaped.informative("reward") and not shaped.informative("accuracy")
    assert not group("b", [0.5, 0.5]).informative("reward")
    assert group("c", [1.0, 1.0], correct=[True, False]).informative("accuracy")  # mixed: kept by accuracy
    with pytest.raises(ValueError, match="filter_metric"):
        shaped.informative("loss")


def test_an_all_correct_group_with_one_overlong_response(tmp_path):
    """Issue 15: filtered on the shaped reward, an all-correct group with one response in the overlong zone
    survives, and group normalisation turns its -0.25 penalty into A ~ -2.5 on a correct answer; filtered on
    accuracy (the default, as verl's DAPO recipes) it is dropped and a refill takes its place."""
    import dataclasses

    from actors.reward import Scorer
    from pipeline.config import compose

    cfg = compose("algorithm=dapo")  # G = 8, max_tokens 32, overlong buffer 4: penalty -0.25 at 29 tokens
    assert cfg.algorithm.filter_metric == "accuracy"
    scorer = Scorer(cfg)
    rewards, correct, _ = scorer.score(["\\boxed{5}"] * 8, ["5"] * 8, [12] * 7 + [29])
    assert correct.all() and rewards.tolist() == [1.0] * 7 + [0.75]
    assert scorer.advantages(rewards, 8)[-1] == pytest.approx(-2.47, abs=0.01)
    overlong = dataclasses.replace(group("a", rewards), correct=correct)
    refill = group("r", [0, 1])
    for metric, kept in (("reward", "a"), ("accuracy", "r")):
        sample, _ = rounds_of([refill])
        sel = select_groups([overlong], sample, enabled=True, max_rounds=1, metric=metric)
        assert [g.gold for g in sel.groups] == [kept] and sel.train == [True]
