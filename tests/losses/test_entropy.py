import math

import pytest
import torch

from losses.entropy import logprobs_and_entropy, naive_logprobs_and_entropy


def inputs(dtype, N=45, H=24, V=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(V, H, generator=g, dtype=dtype) * 0.5).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    g_lp, g_ent = torch.randn(N, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)
    return h, w, y, g_lp, g_ent


def forward_backward(fn, h, w, y, g_lp, g_ent, use_ent=True):
    h.grad = w.grad = None
    lp, ent = fn(h, w, y)
    loss = (lp * g_lp).sum() + ((ent * g_ent).sum() if use_ent else 0.0)
    loss.backward()
    return lp.detach(), ent.detach(), h.grad.clone(), w.grad.clone()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("chunk", [1, 8, 45, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("use_ent", [True, False])
def test_chunked_equals_naive_float32(chunk, temperature, use_ent):
    args = inputs(torch.float32)
    got = forward_backward(lambda h, w, y: logprobs_and_entropy(h, w, y, temperature, chunk), *args, use_ent=use_ent)
    ref = forward_backward(lambda h, w, y: naive_logprobs_and_entropy(h, w, y, temperature), *args, use_ent=use_ent)
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32
        assert rel_err(a, b) < 1e-5


def test_matches_float64_loop():
    """Log-probs / entropies against the formula with plain loops over tokens and vocabulary."""
    h, w, y, _, _ = inputs(torch.float64, N=6, H=5, V=11)
    lp, ent = logprobs_and_entropy(h, w, y, temperature=0.7, chunk_size=4)
    hl, wl = h.tolist(), w.tolist()
    for n in range(6):
        z = [sum(hl[n][k] * wl[v][k] for k in range(5)) / 0.7 for v in range(11)]
        lse = math.log(sum(math.exp(x) for x in z))
        assert abs(lp[n].item() - (z[y[n]] - lse)) < 1e-12
        assert abs(ent[n].item() + sum(math.exp(x - lse) * (x - lse) for x in z)) < 1e-12


def test_gradcheck_float64():
    h, w, y, _, _ = inputs(torch.float64, N=7, H=4, V=9)
    assert torch.autograd.gradcheck(lambda a, b: logprobs_and_entropy(a, b, y, 0.8, 3), (h, w))


def test_entropy_only_and_no_weight_grad():
    h, w, y, _, g_ent = inputs(torch.float64, N=10, H=6, V=13)
    w_frozen = w.detach()
    _, ent = logprobs_and_entropy(h, w_frozen, y, 1.0, 4)
    (ent * g_ent).sum().backward()
    h2 = h.detach().clone().requires_grad_()
    _, ent2 = naive_logprobs_and_entropy(h2, w_frozen, y)
    (ent2 * g_ent).sum().backward()
    assert rel_err(h.grad, h2.grad) < 1e-10


def test_bad_arguments():
    h, w, y, _, _ = inputs(torch.float32, N=3, H=2, V=5)
    with pytest.raises(ValueError, match="temperature"):
        logprobs_and_entropy(h, w, y, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        logprobs_and_entropy(h, w, y, chunk_size=0)
