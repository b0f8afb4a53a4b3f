import math
from fractions import Fraction

import pytest
import torch

from losses import build_algorithm, known_algorithms
from tests.losses.conftest import make_batch
from tests.losses.loops import loop_quadrant_of


def credit_of(name, b, **extra):
    algo = build_algorithm({"name": name, **extra})
    return algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])


def cells(b):
    m = b["mask"].tolist()
    return [(i, t) for i in range(len(m)) for t in range(len(m[0])) if m[i][t]]


def test_entroadv_matches_loop():
    b = make_batch(seed=9)
    c = credit_of("entroadv", b, alpha=0.4, kappa=2.0)
    a, h = b["advantages"].tolist(), b["entropy"].tolist()
    for i, t in cells(b):
        ref = a[i][t] + min(0.4 * h[i][t], abs(a[i][t]) / 2.0)
        assert abs(c.advantages[i, t].item() - ref) < 1e-12
    assert (c.advantages[~b["mask"]] == 0).all()


@pytest.mark.parametrize("ratio", [0.2, 0.5, 1.0])
def test_forking_top_ratio_of_batch(ratio):
    b = make_batch(seed=10, B=12, T=9, G=3)
    c = credit_of("forking", b, top_ratio=ratio)
    h = b["entropy"].tolist()
    vals = sorted((h[i][t] for i, t in cells(b)), reverse=True)
    k = math.ceil(Fraction(str(ratio)) * len(vals))  # exact: 0.2 * 15 must give 3
    threshold = vals[k - 1]
    for i, t in cells(b):
        assert c.token_weight[i, t].item() == (1.0 if h[i][t] >= threshold else 0.0)
    assert int(c.token_weight.sum()) == k
    torch.testing.assert_close(c.advantages, b["advantages"])


@pytest.mark.parametrize("q", ["PHR", "PLR", "NLR", "NHR"])
def test_quadrant_isolation_weights(q):
    b = make_batch(seed=11, B=12, T=9, G=3)
    c = credit_of(f"quadrant_{q.lower()}", b)
    ref = loop_quadrant_of(b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist(), b["group_ids"].tolist())
    for i in range(12):
        for t in range(9):
            assert c.token_weight[i, t].item() == (1.0 if ref[i][t] == q else 0.0)
    assert 0 < c.token_weight.sum() < b["mask"].sum()  # the quadrant is neither empty nor everything


def test_quadrant_subset():
    b = make_batch(seed=11, B=12, T=9, G=3)
    both = credit_of("quadrant", b, quadrants=["PHR", "NHR"]).token_weight
    one = credit_of("quadrant_phr", b).token_weight + credit_of("quadrant_nhr", b).token_weight
    assert torch.equal(both, one)


def test_w_reinf_weights():
    b = make_batch(seed=12)
    c = credit_of("w_reinf", b, positive_weight=0.1)
    a = b["advantages"].tolist()
    for i, t in cells(b):
        assert abs(c.token_weight[i, t].item() - (0.1 if a[i][t] > 0 else 1.0)) < 1e-15


def test_requires_signed_rewards_declaration():
    from losses.algorithms.w_reinf import WReinf
    from losses.base import Algorithm

    assert Algorithm.requires_signed_rewards is False and WReinf.requires_signed_rewards is True
    for name in known_algorithms():
        algo = build_algorithm({"name": name})
        expect = name == "w_reinf"
        assert algo.requires_signed_rewards is expect, name
    # any algorithm whose advantage estimator is the raw reward needs signed rewards
    assert build_algorithm({"name": "dapo", "advantage_estimator": "reward"}).requires_signed_rewards is True
    assert build_algorithm({"name": "eapo", "advantage_estimator": "rloo"}).requires_signed_rewards is False


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_w_reinf_is_weighted_psr_plus_nsr(lam):
    """At ρ = 1 the W-REINF gradient w.r.t. log π of each response token is that of
    λ·L_PSR + L_NSR (arXiv 2506.01347): −λ/N for correct (r = +1), +1/N for wrong (r = −1) responses."""
    b = make_batch(seed=14, B=8, T=6, G=4)
    rewards = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    algo = build_algorithm({"name": "w_reinf", "positive_weight": lam})
    adv = algo.compute_advantages(rewards, b["group_ids"])
    adv_tok = adv[:, None] * b["mask"]
    credit = algo.shape_credit(adv_tok, b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    lp = b["old_logprobs"].clone().requires_grad_()
    out = algo.policy_loss(lp, b["old_logprobs"], credit, b["mask"], algo.normalizer(b["mask"]))
    (grad,) = torch.autograd.grad(out.loss, lp)
    m, r = b["mask"].tolist(), rewards.tolist()
    n = sum(map(sum, m))
    for i in range(8):
        for t in range(6):
            ref = (-lam / n if r[i] > 0 else 1.0 / n) if m[i][t] else 0.0
            assert abs(grad[i, t].item() - ref) < 1e-15, (i, t)
    # with 0/1 rewards the wrong answers (NSR) would get no gradient at all: why ±1 is required
    zero_one = algo.compute_advantages((rewards + 1) / 2, b["group_ids"])
    assert (zero_one[rewards < 0] == 0).all()
