"""Token log-probs and entropies from final hidden states, chunked over tokens (memory O(chunk × V)).

z_n = (h_n · Wᵀ) / τ  (temperature τ as in rollout),  lse_n = log Σ_v exp z_{n,v}
log π(y_n) = z_{n,y_n} − lse_n,   H_n = −Σ_v p_{n,v} log p_{n,v}  with p = softmax(z)
Backward recomputes each chunk's logits (one extra matmul) instead of storing the [N, V] tensor:
    ∂log π(y_n)/∂z_{n,v} = 1[v = y_n] − p_{n,v},     ∂H_n/∂z_{n,v} = −p_{n,v} (log p_{n,v} + H_n)
    ∂/∂h_n = (g_z / τ) W,   ∂/∂W = Σ_n (g_z / τ)ᵀ h_n.
Logits and softmax run in float32 (float64 if the inputs are float64); gradients are returned in
the inputs' dtypes. Both outputs are differentiable w.r.t. hidden and weight (entropy for EntroReg).
"""
from __future__ import annotations

import torch


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, inv_temp: float, buf: torch.Tensor) -> torch.Tensor:
    """Scaled logits [n, V] of the chunk ``h`` [n, H], written into ``buf`` [≥n, V] (reused across chunks)."""
    out = buf[: h.shape[0]]
    if h.dtype == out.dtype:
        torch.mm(h, weight.t(), out=out)
    else:
        out.copy_(h @ weight.t())
    return out.mul_(inv_temp) if inv_temp != 1.0 else out


class _ChunkedLogProbEntropy(torch.autograd.Function):
    """autograd.Function: (hidden [N,H], weight [V,H], labels [N]) -> (logprobs [N], entropy [N])."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, chunk_size):
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        cdt = _compute_dtype(hidden.dtype)
        logp = torch.empty(n_tok, dtype=cdt, device=hidden.device)
        ent, lse = torch.empty_like(logp), torch.empty_like(logp)
        buf = torch.empty(min(chunk_size, max(n_tok, 1)), vocab, dtype=cdt, device=hidden.device)
        pbuf = torch.empty_like(buf)
        for s in range(0, n_tok, chunk_size):
            e = min(s + chunk_size, n_tok)
            z = _chunk_logits(hidden[s:e], weight, 1.0 / temperature, buf)
            lse[s:e] = torch.logsumexp(z, dim=-1)
            z.sub_(lse[s:e, None])  # z is now log p
            logp[s:e] = z.gather(1, labels[s:e, None]).squeeze(1)
            p = torch.exp(z, out=pbuf[: e - s])
            ent[s:e] = -(p.mul_(z)).sum(-1)
        ctx.save_for_backward(hidden, weight, labels, lse, ent)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):
        hidden, weight, labels, lse, ent = ctx.saved_tensors
        inv_t = 1.0 / ctx.temperature
        n_tok, cs = hidden.shape[0], ctx.chunk_size
        cdt = lse.dtype
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=weight.device) if ctx.needs_input_grad[1] else None
        buf = torch.empty(min(cs, max(n_tok, 1)), weight.shape[0], dtype=cdt, device=hidden.device)
        pbuf = torch.empty_like(buf)
        for s in range(0, n_tok, cs):
            e = min(s + cs, n_tok)
            gz = _grad_logits(hidden[s:e], weight, labels[s:e], lse[s:e], ent[s:e],
                              None if grad_logp is None else grad_logp[s:e] * inv_t,
                              None if grad_ent is None else grad_ent[s:e] * inv_t, inv_t, buf, pbuf)
            if grad_h is not None:
                grad_h[s:e] = gz.to(weight.dtype) @ weight
            if grad_w is not None:  # accumulated in the compute dtype (float32 for bf16 inputs)
                grad_w.addmm_(gz.t(), hidden[s:e].to(cdt))
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None


def _grad_logits(h, weight, labels, lse, ent, g_lp, g_ent, inv_t, buf, pbuf) -> torch.Tensor:
    """g_z [n, V] = onehot·g_lp − p·(g_lp + g_ent·(log p + H)); g_* already divided by τ."""
    logp_all = _chunk_logits(h, weight, inv_t, buf).sub_(lse[:, None])
    p = torch.exp(logp_all, out=pbuf[: h.shape[0]])
    if g_ent is not None:
        coef = logp_all.add_(ent[:, None]).mul_(g_ent[:, None])
        if g_lp is not None:
            coef.add_(g_lp[:, None])
        gz = coef.mul_(p).neg_()
    else:
        gz = p.mul_(-g_lp[:, None]) if g_lp is not None else p.zero_()
    if g_lp is not None:
        gz.scatter_add_(1, labels[:, None], g_lp[:, None].to(gz.dtype))
    return gz


def logprobs_and_entropy(hidden, weight, labels, temperature=1.0, chunk_size=1024):
    """(logprobs [N], entropy [N]) of ``labels`` [N] under softmax(hidden [N, H] · weight [V, H]ᵀ / τ).

    Memory O(chunk_size × V) in forward and backward; outputs in float32 (float64 for float64 inputs);
    differentiable w.r.t. hidden and weight through both outputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    return _ChunkedLogProbEntropy.apply(hidden, weight, labels.long(), float(temperature), int(chunk_size))


def naive_logprobs_and_entropy(hidden, weight, labels, temperature=1.0):
    """Reference path materialising the full [N, V] logits (for tests and the benchmark)."""
    cdt = _compute_dtype(hidden.dtype)
    logits = (hidden @ weight.t()).to(cdt) / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(1, labels.long()[:, None]).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent
