"""A3PO (arXiv 2512.21625) against a float64 loop reference, including the decay over training."""
import math
from fractions import Fraction

import pytest
import torch

from losses import build_algorithm, known_algorithms
from tests.losses.conftest import make_batch

PAIRS = ("pos_high", "pos_low", "neg_high", "neg_low")


def loop_scale(cfg, pair, step, total):
    """s(p) = 1 + (s − 1)·d(p), p = step/total, d = max(0, 1 − p/decay_end) or 1."""
    p = min(1.0, step / total)
    d = 1.0 if cfg["scale_decay"] == "none" else max(0.0, 1.0 - p / cfg["decay_end"])
    return 1.0 + (cfg[f"{pair}_scale"] - 1.0) * d


def loop_count(n, fraction):
    """k = max(1, ⌊f·n⌋) for f > 0 (exact decimal arithmetic), 0 for f = 0 or an empty response."""
    return 0 if fraction == 0 or n == 0 else max(1, math.floor(Fraction(str(fraction)) * n))


def loop_a3po(adv, key, mask, cfg, step, total):
    """[B][T] weights: polarity weight × scales of the high / low sets of each response (plain loops)."""
    out = [[0.0] * len(adv[0]) for _ in adv]
    for i in range(len(adv)):
        toks = [t for t in range(len(adv[0])) if mask[i][t]]
        desc = sorted(toks, key=lambda t: (-key[i][t], t))  # descending key, ties: earlier position first
        n = len(toks)
        for t in toks:
            a = adv[i][t]
            if a == 0:
                out[i][t] = 1.0
                continue
            pol = "pos" if a > 0 else "neg"
            r = desc.index(t)
            w = cfg[f"{pol}_weight"]
            if r < loop_count(n, cfg[f"{pol}_high_fraction"]):
                w *= loop_scale(cfg, f"{pol}_high", step, total)
            if r >= n - loop_count(n, cfg[f"{pol}_low_fraction"]):
                w *= loop_scale(cfg, f"{pol}_low", step, total)
            out[i][t] = w
    return out


def full_config(algo):
    return {f: getattr(algo.config, f) for f in algo.config.__dataclass_fields__}


def check_against_loop(b, overrides, step, total):
    algo = build_algorithm({"name": "a3po", **overrides})
    algo.begin_step(step, total)
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    cfg = full_config(algo)
    key = ([[math.exp(x) for x in row] for row in b["old_logprobs"].tolist()] if cfg["rank_by"] == "prob"
           else b["entropy"].tolist())
    ref = loop_a3po(b["advantages"].tolist(), key, b["mask"].tolist(), cfg, step, total)
    torch.testing.assert_close(credit.token_weight, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(credit.advantages, b["advantages"])
    return credit


ALL_PAIRS = dict(pos_weight=1.3, neg_weight=0.7, pos_high_fraction=0.6, pos_high_scale=0.5,
                 pos_low_fraction=0.5, pos_low_scale=3.0, neg_high_fraction=0.25, neg_high_scale=5.0,
                 neg_low_fraction=0.4, neg_low_scale=0.25)


@pytest.mark.parametrize("rank_by", ["prob", "entropy"])
@pytest.mark.parametrize("step", [0, 3, 7])
def test_all_four_pairs_match_loop(rank_by, step):
    b = make_batch(seed=13, B=10, T=12, G=5)
    credit = check_against_loop(b, {**ALL_PAIRS, "rank_by": rank_by}, step, 8)
    m = b["mask"] & (b["advantages"] != 0)
    assert len(torch.unique(credit.token_weight[m])) >= 6  # many distinct weights: the sets matter


def test_ties_are_broken_by_position():
    b = make_batch(seed=21, B=10, T=12, G=5)
    b["entropy"] = torch.round(b["entropy"])  # keys in {0, 1, 2, 3}: many ties at every cut
    check_against_loop(b, {**ALL_PAIRS, "rank_by": "entropy"}, 0, 8)


def test_defaults_follow_the_reference():
    c = build_algorithm({"name": "a3po"}).config
    assert c.rank_by == "prob" and (c.pos_weight, c.neg_weight) == (1.0, 1.0)
    assert (c.pos_low_fraction, c.pos_low_scale, c.neg_high_fraction, c.neg_high_scale) == (0.2, 2.0, 0.2, 2.0)
    assert (c.pos_high_fraction, c.neg_low_fraction) == (0.0, 0.0)
    assert (c.scale_decay, c.decay_end) == ("linear", 1.0)
    b = make_batch(seed=15, B=10, T=12, G=5)
    credit = check_against_loop(b, {}, 0, 10)
    a, w = b["advantages"], credit.token_weight
    assert (w[(a > 0) & b["mask"]] == 2.0).any() and (w[(a < 0) & b["mask"]] == 2.0).any()


@pytest.mark.parametrize("decay,end", [("linear", 1.0), ("linear", 0.5), ("linear", 2.0), ("none", 1.0)])
def test_decay_schedule(decay, end):
    b = make_batch(seed=16, B=10, T=12, G=5)
    total = 8
    overrides = {**ALL_PAIRS, "scale_decay": decay, "decay_end": end}
    algo = build_algorithm({"name": "a3po", **overrides})
    cfg = full_config(algo)
    for step in range(total):
        algo.begin_step(step, total)
        got = algo.current_scales()
        for pair in PAIRS:
            assert abs(got[pair] - loop_scale(cfg, pair, step, total)) < 1e-15, (pair, step)
        check_against_loop(b, overrides, step, total)
    late = build_algorithm({"name": "a3po", "scale_decay": decay, "decay_end": end})
    late.begin_step(total, total)  # p = 1: fully decayed unless "none" or decay_end > 1
    scales = late.current_scales()
    if decay == "linear" and end <= 1.0:
        assert all(v == 1.0 for v in scales.values())
        credit = late.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
        assert (credit.token_weight[b["mask"]] == 1.0).all()  # plain DAPO at the end
    else:
        assert scales["pos_low"] > 1.0 and scales["neg_high"] > 1.0


def test_begin_step_is_a_pure_function_of_progress():
    b = make_batch(seed=17, B=10, T=12, G=5)
    walked, fresh = build_algorithm({"name": "a3po"}), build_algorithm({"name": "a3po"})
    for step in range(6):
        walked.begin_step(step, 10)
    fresh.begin_step(5, 10)  # e.g. after a resume
    args = (b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    assert torch.equal(walked.shape_credit(*args).token_weight, fresh.shape_credit(*args).token_weight)
    with pytest.raises(ValueError, match="begin_step"):
        fresh.begin_step(0, 0)
    with pytest.raises(ValueError, match="begin_step"):
        fresh.begin_step(-1, 10)


def test_begin_step_default_is_a_no_op():
    b = make_batch(seed=18, B=10, T=12, G=5)
    args = (b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    for name in known_algorithms():
        if name == "a3po":
            continue
        algo = build_algorithm({"name": name})
        before = algo.shape_credit(*args)
        assert algo.begin_step(7, 10) is None
        after = algo.shape_credit(*args)
        assert torch.equal(before.advantages, after.advantages) and torch.equal(before.token_weight,
                                                                                  after.token_weight), name
