"""Manipulation checks (losses.grad_checks) against per-token float64 loops: each token's ∇log π computed on
its own by autograd, summed with the credit by hand, then cosines and norm shares by plain arithmetic."""
import math

import pytest
import torch

from losses import build_algorithm
from losses.grad_checks import credit_grad_checks
from tests.losses.conftest import make_batch
from tests.losses.loops import loop_quadrant_of

V, D = 11, 5


def tiny_policy(seed):
    """A float64 'policy': logits[b, t] = W · tanh(E[x_{b,t}]) — enough parameters for non-trivial cosines."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.Parameter(torch.randn(V, D, generator=g, dtype=torch.float64))
    head = torch.nn.Parameter(torch.randn(V, D, generator=g, dtype=torch.float64))
    return [emb, head]


def token_logprob(params, x, o):
    emb, head = params
    return torch.log_softmax(head @ torch.tanh(emb[x]), -1)[o]


def batch_logprobs(params, xs, os_):
    return torch.stack([torch.stack([token_logprob(params, x, o) for x, o in zip(xr, orow)])
                        for xr, orow in zip(xs.tolist(), os_.tolist())])


def loop_grad(params, xs, os_, signal, mask, keep):
    """−(1/N) Σ_{keep(i,t)} s_it ∇log π(o_it), one token at a time; flat float64 vector."""
    n = int(mask.sum())
    total = [torch.zeros_like(p) for p in params]
    for i in range(xs.shape[0]):
        for t in range(xs.shape[1]):
            if mask[i, t] and keep(i, t) and float(signal[i, t]) != 0.0:
                grads = torch.autograd.grad(token_logprob(params, int(xs[i, t]), int(os_[i, t])), params)
                total = [a - float(signal[i, t]) / n * g for a, g in zip(total, grads)]
    return torch.cat([t.reshape(-1) for t in total])


@pytest.mark.parametrize("name, seed", [("eapo", 0), ("eapo", 3), ("dapo", 1)])
def test_checks_match_per_token_loops(name, seed):
    b = make_batch(seed)
    mask, adv = b["mask"], b["advantages"]
    entropy = torch.where(mask, b["entropy"], torch.zeros_like(b["entropy"]))
    g = torch.Generator().manual_seed(seed + 10)
    xs, os_ = torch.randint(0, V, mask.shape, generator=g), torch.randint(0, V, mask.shape, generator=g)
    algo = build_algorithm({"name": name, **({"alpha": 0.9, "phi": 1.0} if name == "eapo" else {})})
    credit = algo.shape_credit(adv, entropy, b["old_logprobs"], mask, b["group_ids"])
    signal = credit.advantages * credit.token_weight
    params = tiny_policy(seed)
    got = credit_grad_checks(batch_logprobs(params, xs, os_), adv, signal, entropy, mask, b["group_ids"], params)

    quad = loop_quadrant_of(adv.tolist(), entropy.tolist(), mask.tolist(), b["group_ids"].tolist())
    shaped = loop_grad(params, xs, os_, signal, mask, lambda i, t: True)
    plain = loop_grad(params, xs, os_, adv, mask, lambda i, t: True)
    per_q = {q: loop_grad(params, xs, os_, signal, mask, lambda i, t, q=q: quad[i][t] == q)
             for q in ("PHR", "PLR", "NLR", "NHR")}
    cos = float(shaped @ plain) / math.sqrt(float(shaped @ shaped) * float(plain @ plain))
    assert got["grad/cos_shaped_plain"] == pytest.approx(cos, abs=1e-10)
    assert got["grad/norm_ratio_shaped_plain"] == pytest.approx(float(shaped.norm() / plain.norm()), rel=1e-10)
    sq = {q: float(v @ v) for q, v in per_q.items()}
    for q in sq:
        assert got[f"quadrant/{q}/grad_share"] == pytest.approx(sq[q] / sum(sq.values()), abs=1e-10)
    if name == "dapo":  # identity credit: the same gradient
        assert got["grad/cos_shaped_plain"] == pytest.approx(1.0, abs=1e-12)
    else:  # entropy-aware weights in [0.1, 1.9] turn the gradient
        assert got["grad/cos_shaped_plain"] < 0.999


def test_a_uniform_rescale_keeps_the_direction():
    b = make_batch(2)
    mask, adv = b["mask"], b["advantages"]
    entropy = torch.where(mask, b["entropy"], torch.zeros_like(b["entropy"]))
    xs = torch.randint(0, V, mask.shape, generator=torch.Generator().manual_seed(0))
    params = tiny_policy(2)
    got = credit_grad_checks(batch_logprobs(params, xs, xs), adv, 1.1 * adv, entropy, mask, b["group_ids"], params)
    assert got["grad/cos_shaped_plain"] == pytest.approx(1.0, abs=1e-12)
    assert got["grad/norm_ratio_shaped_plain"] == pytest.approx(1.1, rel=1e-12)


def test_no_signal_gives_no_checks():
    b = make_batch(0)
    params = tiny_policy(0)
    xs = torch.zeros_like(b["mask"], dtype=torch.long)
    zero = torch.zeros_like(b["advantages"])
    assert credit_grad_checks(batch_logprobs(params, xs, xs), zero, zero, zero, b["mask"], b["group_ids"], params) == {}
