"""Per-token log-probs and entropies of the policy on a :class:`~pipeline.batch.TrainBatch`.

Only response positions are projected onto the vocabulary, in chunks
(``losses.entropy.logprobs_and_entropy``), so memory is O(chunk x V) rather than O(B x T x V).
"""
from __future__ import annotations

import torch

from losses.entropy import logprobs_and_entropy


def token_logprobs_entropy(model, batch, temperature: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(o_t | s_t) [B, T], H(π(· | s_t)) [B, T]) with temperature-scaled logits; 0 off-response.

    ``model`` is a Hugging Face causal LM (``model.model`` the decoder, ``model.lm_head`` the
    output embedding). Differentiable in the model parameters when grad is enabled.
    """
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    mask = batch.response_mask.bool()
    h = hidden[:, :-1][mask]
    lp, ent = logprobs_and_entropy(h, model.lm_head.weight, batch.labels[mask], temperature, chunk_size)
    logprobs = torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(mask, lp)
    entropy = torch.zeros(mask.shape, dtype=ent.dtype, device=ent.device).masked_scatter(mask, ent)
    return logprobs, entropy


@torch.no_grad()
def old_policy_stats(model, batch, micro_batch_size: int, temperature: float, chunk_size: int):
    """Old-policy log-probs and entropies [B, T], computed without grad in micro-batches."""
    outs = [token_logprobs_entropy(model, batch.rows(slice(i, i + micro_batch_size)), temperature, chunk_size)
            for i in range(0, batch.size, micro_batch_size)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
