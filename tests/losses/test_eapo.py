import pytest
import torch

from losses import build_algorithm
from losses.entropy_credit import entropy_aware_advantages
from tests.losses.conftest import make_batch
from tests.losses.loops import loop_group_stats, loop_quadrant_of


def loop_eapo(adv, ent, mask, gid, alpha, phi, plain=None, reverse=False):
    adv, ent, mask, gid = adv.tolist(), ent.tolist(), mask.tolist(), gid.tolist()
    if reverse:  # the control arm scores -H
        ent = [[-h for h in row] for row in ent]
    out = [[0.0] * len(adv[0]) for _ in adv]
    for i in range(len(adv)):
        mu, sd = loop_group_stats(ent, mask, gid, i)
        for t in range(len(adv[0])):
            a = adv[i][t]
            if not mask[i][t] or (plain is not None and plain[i][t]):
                out[i][t] = a
                continue
            z = (ent[i][t] - mu) / sd if sd >= 1e-8 else 0.0
            score = min(max(z, -abs(a) / phi), abs(a) / phi)
            sign = (a > 0) - (a < 0)
            out[i][t] = a + alpha * sign * score
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("alpha,phi", [(0.2, 2.0), (0.9, 1.0), (0.5, 0.7)])
def test_matches_loop(alpha, phi):
    b = make_batch(seed=3, B=12, T=9, G=3)
    out = entropy_aware_advantages(b["advantages"], b["entropy"], b["mask"], b["group_ids"], alpha, phi)
    ref = loop_eapo(b["advantages"], b["entropy"], b["mask"], b["group_ids"], alpha, phi)
    m = b["mask"]
    torch.testing.assert_close(out[m], ref[m], rtol=1e-12, atol=1e-12)
    assert torch.isfinite(out).all()
    assert (out[m] != b["advantages"][m]).any()  # the shaping does something


def test_weight_bounds_and_sign():
    b = make_batch(seed=4, B=16, T=11, G=4)
    alpha, phi = 0.2, 2.0
    out = entropy_aware_advantages(b["advantages"], b["entropy"], b["mask"], b["group_ids"], alpha, phi)
    a = b["advantages"]
    nz = b["mask"] & (a != 0)
    w = out[nz] / a[nz]
    assert w.min() >= 1 - alpha / phi - 1e-12 and w.max() <= 1 + alpha / phi + 1e-12
    assert w.max() > 1.0 and w.min() < 1.0
    assert (torch.sign(out[nz]) == torch.sign(a[nz])).all()
    zero = b["mask"] & (a == 0)
    assert zero.any() and (out[zero] == 0).all()


def entropy_grad(fn, seed=5):
    """d(Σ fn(Â, H)) / dH through autograd (None when no graph path leads from the output to H)."""
    b = make_batch(seed=seed)
    ent = torch.nan_to_num(b["entropy"]).requires_grad_()
    adv = b["advantages"].clone().requires_grad_()
    out = fn(adv, ent, b["mask"], b["group_ids"])
    (g_ent,) = torch.autograd.grad(out.sum(), ent, retain_graph=True, allow_unused=True)
    (g_adv,) = torch.autograd.grad(out.sum(), adv)
    return g_ent, g_adv


def test_no_gradient_reaches_entropy():
    g_ent, g_adv = entropy_grad(entropy_aware_advantages)
    assert g_ent is None  # stopgrad: no autograd path from Â^CA to H
    torch.testing.assert_close(g_adv, torch.ones_like(g_adv))  # only the identity path reaches Â


def test_entropy_gradient_check_can_fail():
    """Sanity: the same check on Â^CA WITHOUT stopgrad finds a path to H (so the test above can fail)."""

    def eapo_without_stopgrad(adv, ent, mask, gid, alpha=0.2, phi=2.0):
        m = mask.bool()
        count = torch.zeros(int(gid.max()) + 1, dtype=ent.dtype).index_add(0, gid, m.sum(-1).to(ent.dtype))
        h = torch.where(m, ent, torch.zeros_like(ent))
        mean = torch.zeros_like(count).index_add(0, gid, h.sum(-1)) / count.clamp_min(1)
        dev = torch.where(m, ent - mean[gid][:, None], torch.zeros_like(ent))
        std = (torch.zeros_like(count).index_add(0, gid, dev.pow(2).sum(-1)) / count.clamp_min(1)).sqrt()
        z = dev / std[gid][:, None].clamp_min(1e-8)
        bound = adv.detach().abs() / phi
        return adv + alpha * torch.sign(adv.detach()) * torch.maximum(torch.minimum(z, bound), -bound)

    g_ent, _ = entropy_grad(eapo_without_stopgrad)
    assert g_ent is not None and g_ent.abs().sum() > 0


def test_degenerate_inputs_finite():
    T = 5
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    ent = torch.full((4, T), 0.7, dtype=torch.float64)  # sigma_H = 0 in group 0
    ent[2, 0], ent[3] = 5.0, float("inf")
    adv = torch.zeros(4, T, dtype=torch.float64)  # all rewards equal
    gid = torch.tensor([0, 0, 1, 2])
    out = entropy_aware_advantages(adv, ent, mask, gid)
    assert torch.isfinite(out).all() and (out == 0).all()
    adv2 = torch.ones(4, T, dtype=torch.float64)
    out2 = entropy_aware_advantages(adv2, ent, mask, gid)
    assert torch.isfinite(out2).all()
    torch.testing.assert_close(out2, adv2)  # sigma_H = 0 (and the single-token group) -> score 0


@pytest.mark.parametrize("q", ["PHR", "PLR", "NLR", "NHR"])
def test_without_quadrant_matches_loop(q):
    b = make_batch(seed=6, B=12, T=9, G=3)
    algo = build_algorithm({"name": f"eapo_wo_{q.lower()}"})
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    names = loop_quadrant_of(b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist(),
                             b["group_ids"].tolist())
    plain = [[name == q for name in row] for row in names]
    ref = loop_eapo(b["advantages"], b["entropy"], b["mask"], b["group_ids"], 0.2, 2.0, plain)
    m = b["mask"]
    torch.testing.assert_close(credit.advantages[m], ref[m], rtol=1e-12, atol=1e-12)
    assert (credit.advantages[~m] == 0).all() and (credit.token_weight[m] == 1).all()
    # not vacuous: Q is non-empty and the ablation changes exactly the credit of Q's tokens
    full = build_algorithm({"name": "eapo"}).shape_credit(b["advantages"], b["entropy"], b["old_logprobs"],
                                                          b["mask"], b["group_ids"]).advantages
    in_q = torch.tensor(plain)
    assert in_q.any() and (credit.advantages[in_q] != full[in_q]).any()
    assert torch.equal(credit.advantages[~in_q], full[~in_q])


@pytest.mark.parametrize("name,alpha,phi,reverse", [("eapo_strong", 0.9, 1.0, False), ("eapo_mid", 0.5, 1.0, False),
                                                    ("eapo_reversed", 0.9, 1.0, True)])
def test_study_arms_match_the_loop(name, alpha, phi, reverse):
    """The study's arms: stronger EAPO, and its control that credits LOW-entropy tokens (score -H)."""
    b = make_batch(seed=6, B=12, T=9, G=3)
    ent = torch.nan_to_num(b["entropy"])
    credit = build_algorithm({"name": name}).shape_credit(b["advantages"], ent, b["old_logprobs"], b["mask"],
                                                          b["group_ids"])
    ref = loop_eapo(b["advantages"], ent, b["mask"], b["group_ids"], alpha, phi, reverse=reverse)
    m = b["mask"]
    torch.testing.assert_close(credit.advantages[m], ref[m], rtol=1e-12, atol=1e-12)
    if reverse:  # the highest-entropy signed token of each row gets the smallest weight there, and vice versa
        strong = build_algorithm({"name": "eapo_strong"}).shape_credit(b["advantages"], ent, b["old_logprobs"],
                                                                       b["mask"], b["group_ids"])
        nz = m & (b["advantages"] != 0)
        w_rev, w_fwd = credit.advantages[nz] / b["advantages"][nz], strong.advantages[nz] / b["advantages"][nz]
        assert torch.corrcoef(torch.stack([w_rev, w_fwd]))[0, 1] < -0.9
