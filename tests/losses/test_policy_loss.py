import math

import pytest
import torch

from losses import build_algorithm
from losses.types import Credit
from tests.losses.conftest import make_batch


def setup(seed=20, B=8, T=7):
    b = make_batch(seed=seed, B=B, T=T, G=4)
    g = torch.Generator().manual_seed(seed + 1)
    # current log-probs spread so that some ratios are clipped on both sides
    logprobs = (b["old_logprobs"] + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
    ref = b["old_logprobs"] + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    return b, logprobs, ref


def loop_surrogate(lp, old, a, lo, hi, dual):
    """Scalar per-token clipped surrogate (autograd through scalar tensor ops)."""
    ratio = torch.exp(lp - old)
    l = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - lo, 1 + hi))
    if dual is not None and a < 0:
        l = torch.minimum(l, -dual * a)
    return l


def loop_token_mean(b, logprobs, token_loss):
    m = b["mask"].tolist()
    B, T = len(m), len(m[0])
    n = sum(m[i][t] for i in range(B) for t in range(T))
    total = 0.0
    for i in range(B):
        for t in range(T):
            if m[i][t]:
                total = total + token_loss(i, t)
    return total / n


def run(algo, b, logprobs, ref=None, entropy=None):
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    norm = algo.normalizer(b["mask"])
    out = algo.policy_loss(logprobs, b["old_logprobs"], credit, b["mask"], norm, ref_logprobs=ref, entropy=entropy)
    return out, credit


def assert_loss_and_grad(loss, ref, leaf, rtol=1e-12):
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads(loss, leaf), grads(ref, leaf), rtol=rtol, atol=1e-14)


def grads(loss, leaf):
    (g,) = torch.autograd.grad(loss, leaf, retain_graph=True)
    return g


@pytest.mark.parametrize("dual", [None, 1.5])
def test_clipped_surrogate_matches_loop(dual):
    b, logprobs, _ = setup()
    algo = build_algorithm({"name": "dapo", "dual_clip": dual})
    out, credit = run(algo, b, logprobs)
    lp, old, a = logprobs, b["old_logprobs"], credit.advantages
    ref = loop_token_mean(b, lp, lambda i, t: loop_surrogate(lp[i, t], old[i, t], a[i, t], 0.2, 0.28, dual))
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-12)
    assert 0 < out.metrics["clip_fraction"] < 1
    assert abs(out.metrics["pg_loss"] - ref.item()) < 1e-12
    m = b["mask"]
    r = torch.exp(lp - old).detach()[m]
    assert abs(out.metrics["approx_kl"] - ((r - 1) - r.log()).mean().item()) < 1e-12


def test_dual_clip_changes_loss():
    b, logprobs, _ = setup()
    with torch.no_grad():
        logprobs += 1.0  # large ratios: dual clip binds on negative advantages
    plain = run(build_algorithm({"name": "dapo"}), b, logprobs)[0].loss
    dual = run(build_algorithm({"name": "dapo", "dual_clip": 1.5}), b, logprobs)[0].loss
    assert dual.item() < plain.item() - 1e-3


def test_eapo_loss_uses_shaped_credit_and_token_weights():
    b, logprobs, _ = setup()
    algo = build_algorithm({"name": "quadrant_nhr"})
    out, credit = run(algo, b, logprobs)
    lp, old, a, w = logprobs, b["old_logprobs"], credit.advantages, credit.token_weight
    ref = loop_token_mean(b, lp, lambda i, t: w[i, t] * loop_surrogate(lp[i, t], old[i, t], a[i, t], 0.2, 0.28, None))
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
    g = grads(out.loss, lp)
    assert (g[w == 0] == 0).all() and (g[w == 1] != 0).any()


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_term_matches_loop(est):
    b, logprobs, ref_lp = setup()
    algo = build_algorithm({"name": "dapo", "kl_coef": 0.3, "kl_estimator": est})
    out, credit = run(algo, b, logprobs, ref=ref_lp)
    lp, old, a = logprobs, b["old_logprobs"], credit.advantages

    def surrogate(i, t):
        return loop_surrogate(lp[i, t], old[i, t], a[i, t], 0.2, 0.28, None)

    def kl(i, t):
        log_r = ref_lp[i, t] - lp[i, t]
        return {"k1": -log_r, "k2": 0.5 * log_r ** 2, "k3": torch.exp(log_r) - 1 - log_r}[est]

    ref = loop_token_mean(b, lp, lambda i, t: surrogate(i, t) + 0.3 * kl(i, t))
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-12)
    with pytest.raises(ValueError, match="kl_coef"):
        run(algo, b, logprobs)


def test_entropy_bonus_matches_loop():
    b, logprobs, _ = setup()
    ent = torch.nn.functional.softplus(logprobs * 2)  # stands in for the current-policy entropy (with grad)
    algo = build_algorithm({"name": "entroreg", "entropy_coef": 0.05})
    out, credit = run(algo, b, logprobs, entropy=ent)
    lp, old, a = logprobs, b["old_logprobs"], credit.advantages

    def surrogate(i, t):
        return loop_surrogate(lp[i, t], old[i, t], a[i, t], 0.2, 0.28, None)

    ref = loop_token_mean(b, lp, lambda i, t: surrogate(i, t) - 0.05 * ent[i, t])
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-12)
    with pytest.raises(ValueError, match="entropy_coef"):
        run(algo, b, logprobs)


def test_gspo_matches_sequence_loop():
    b, logprobs, _ = setup()
    with torch.no_grad():
        logprobs.copy_(b["old_logprobs"] + (logprobs - b["old_logprobs"]) * 0.002)  # ratios near the tiny clip
    algo = build_algorithm({"name": "gspo"})
    out, credit = run(algo, b, logprobs)
    m, lp, old, a = b["mask"].tolist(), logprobs, b["old_logprobs"], credit.advantages
    seqs = [i for i in range(len(m)) if any(m[i])]
    total = 0.0
    for i in seqs:
        toks = [t for t in range(len(m[i])) if m[i][t]]
        s = torch.exp(sum(lp[i, t] - old[i, t] for t in toks) / len(toks))
        adv = a[i, toks[0]]
        total = total + torch.maximum(-adv * s, -adv * torch.clamp(s, 1 - 3e-4, 1 + 4e-4))
    ref = total / len(seqs)
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-10)
    assert 0 < out.metrics["clip_fraction"] < 1


def loop_cov(b, lp, a):
    m = b["mask"].tolist()
    cells = [(i, t) for i in range(len(m)) for t in range(len(m[0])) if m[i][t]]
    ma = sum(a[i][t] for i, t in cells) / len(cells)
    ml = sum(lp[i][t] for i, t in cells) / len(cells)
    return cells, {(i, t): (a[i][t] - ma) * (lp[i][t] - ml) for i, t in cells}


def test_kl_cov_matches_loop():
    b, logprobs, _ = setup()
    algo = build_algorithm({"name": "kl_cov", "kl_cov_ratio": 0.1, "kl_cov_coef": 2.0})
    out, credit = run(algo, b, logprobs)
    cells, cov = loop_cov(b, logprobs.tolist(), credit.advantages.tolist())
    k = max(1, int(len(cells) * 0.1))
    top = set(sorted(cells, key=lambda c: -cov[c])[:k])
    lp, old, a = logprobs, b["old_logprobs"], credit.advantages

    def tok(i, t):
        l = -a[i, t] * torch.exp(lp[i, t] - old[i, t])
        return l + 2.0 * torch.abs(lp[i, t] - old[i, t]) if (i, t) in top else l

    ref = loop_token_mean(b, lp, tok)
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-12)
    assert abs(out.metrics["cov_selected_fraction"] - k / len(cells)) < 1e-12


def test_clip_cov_all_in_window_matches_loop():
    b, logprobs, _ = setup()
    algo = build_algorithm({"name": "clip_cov", "clip_cov_ratio": 1.0, "clip_cov_lb": 0.0, "clip_cov_ub": 1e9})
    out, credit = run(algo, b, logprobs)
    cells, cov = loop_cov(b, logprobs.tolist(), credit.advantages.tolist())
    lp, old, a = logprobs, b["old_logprobs"], credit.advantages

    def tok(i, t):
        ratio = torch.exp(lp[i, t] - old[i, t])
        l1, l2 = -a[i, t] * ratio, -a[i, t] * torch.clamp(ratio, 0.8, 1.28)
        clipped = bool(l2 > l1)
        return 0.0 * l1 if (not clipped and 0.0 < cov[(i, t)] < 1e9) else torch.maximum(l1, l2)

    ref = loop_token_mean(b, lp, tok)
    assert_loss_and_grad(out.loss, ref, lp, rtol=1e-12)
    assert out.metrics["cov_selected_fraction"] > 0


def test_clip_cov_random_fraction():
    b, logprobs, _ = setup(B=16, T=40)
    logprobs = b["old_logprobs"].clone().requires_grad_()  # ratio 1: no token is clipped, all eligible
    algo = build_algorithm({"name": "clip_cov", "clip_cov_ratio": 0.05, "clip_cov_lb": -1e9, "clip_cov_ub": 1e9})
    out, _ = run(algo, b, logprobs)
    n = int(b["mask"].sum())
    assert out.metrics["cov_selected_fraction"] == max(1, int(0.05 * n)) / n


@pytest.mark.parametrize("name", ["eapo", "grpo", "dr_grpo", "gspo", "kl_cov", "clip_cov", "forking", "a3po",
                                  "entroadv", "w_reinf"])
def test_degenerate_batches_finite(name):
    B, T = 4, 5
    mask = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    algo = build_algorithm({"name": name})
    gid = torch.tensor([0, 0, 1, 1])
    adv = algo.compute_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0]), gid)  # all-equal groups
    adv_tok = adv[:, None].expand(B, T) * mask
    ent = torch.where(mask, torch.full((B, T), 0.5), torch.full((B, T), float("nan")))  # sigma_H = 0
    old = torch.where(mask, torch.full((B, T), -1.0), torch.full((B, T), float("-inf")))
    credit = algo.shape_credit(adv_tok, ent, old, mask, gid)
    assert torch.isfinite(credit.advantages).all() and torch.isfinite(credit.token_weight).all()
    lp = torch.where(mask, torch.full((B, T), -0.9), torch.full((B, T), float("nan"))).requires_grad_()
    out = algo.policy_loss(lp, old, credit, mask, algo.normalizer(mask))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(lp.grad).all()
    assert all(math.isfinite(v) for v in out.metrics.values())
    empty = torch.zeros(B, T, dtype=torch.bool)
    out = algo.policy_loss(lp, old, Credit(torch.zeros(B, T), torch.zeros(B, T)), empty, algo.normalizer(empty))
    assert out.loss.item() == 0 and all(math.isfinite(v) for v in out.metrics.values())
