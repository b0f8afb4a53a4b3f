"""Per-token log-probs and entropies of the policy on a :class:`~core.batch.TrainBatch`.

Only response positions are projected onto the vocabulary, in chunks
(``losses.entropy.logprobs_and_entropy``), so memory is O(chunk x V) rather than O(B x T x V).

The G responses of a group share their prompt. :func:`shared_prompt_logprobs_entropy` runs each
prompt through the decoder once and lets its G responses attend to that prompt's keys and values
(repeated G times; autograd sums their gradients back), instead of running the prompt G times: the
same log-probs, entropies and gradients for (G − 1)/G less prompt compute.
"""
from __future__ import annotations

import torch

from losses.entropy import logprobs_and_entropy


def _project(model, hidden, labels, mask, temperature: float, chunk_size: int):
    """[B, T] log-probs and entropies of ``labels`` from next-token ``hidden`` [B, T, H] where ``mask``."""
    lp, ent = logprobs_and_entropy(hidden[mask], model.lm_head.weight, labels[mask], temperature, chunk_size)
    logprobs = torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(mask, lp)
    entropy = torch.zeros(mask.shape, dtype=ent.dtype, device=ent.device).masked_scatter(mask, ent)
    return logprobs, entropy


def token_logprobs_entropy(model, batch, temperature: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(o_t | s_t) [B, T], H(π(· | s_t)) [B, T]) with temperature-scaled logits; 0 off-response.

    ``model`` is a Hugging Face causal LM (``model.model`` the decoder, ``model.lm_head`` the
    output embedding). Differentiable in the model parameters when grad is enabled.
    """
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return _project(model, hidden[:, :-1], batch.labels, batch.response_mask.bool(), temperature, chunk_size)


def _prompts_left_padded(batch, group_size: int, pad_id: int):
    """One row per group: prompt ids [P, W] left-padded, their mask [P, W], prompt lengths [P]."""
    lengths = batch.prompt_lengths[::group_size]
    width = int(lengths.max())
    ids = torch.full((len(lengths), width), pad_id, dtype=batch.input_ids.dtype)
    mask = torch.zeros((len(lengths), width), dtype=batch.attention_mask.dtype)
    for j, n in enumerate(lengths.tolist()):
        ids[j, width - n:] = batch.input_ids[j * group_size, :n]
        mask[j, width - n:] = 1
    return ids, mask, lengths


def _responses_right_padded(batch, pad_id: int):
    """Response ids [B, R] right-padded, their attention mask [B, R], response lengths [B]."""
    total = batch.attention_mask.sum(-1)
    lengths = total - batch.prompt_lengths
    width = max(1, int(lengths.max()))
    cols = torch.arange(width)
    index = (batch.prompt_lengths[:, None] + cols).clamp(max=batch.input_ids.shape[1] - 1)
    valid = cols[None, :] < lengths[:, None]
    ids = torch.where(valid, batch.input_ids.gather(1, index), torch.full_like(index, pad_id))
    return ids, valid.to(batch.attention_mask.dtype), lengths


def shared_prompt_logprobs_entropy(model, batch, group_size: int, temperature: float, chunk_size: int,
                                   pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs_entropy` with each group's prompt encoded once (see module docstring).

    Rows must come in groups of ``group_size`` consecutive rows sharing a prompt (as collated).
    Prompt tokens sit at positions 0..n_p − 1 and responses continue at n_p, as in the plain forward.
    """
    g = group_size
    p_ids, p_mask, p_len = _prompts_left_padded(batch, g, pad_id)
    positions = (p_mask.cumsum(-1) - 1).clamp(min=0)
    out = model.model(input_ids=p_ids, attention_mask=p_mask, position_ids=positions, use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(g)
    r_ids, r_mask, r_len = _responses_right_padded(batch, pad_id)
    attention = torch.cat([p_mask.repeat_interleave(g, 0), r_mask], dim=-1)
    r_pos = batch.prompt_lengths[:, None] + torch.arange(r_ids.shape[1])[None, :]
    h_resp = model.model(input_ids=r_ids, attention_mask=attention, position_ids=r_pos,
                         past_key_values=cache, use_cache=True).last_hidden_state
    # response token k is predicted by the last prompt position (k = 0) or by response position k − 1
    h_pred = torch.cat([out.last_hidden_state[:, -1:].repeat_interleave(g, 0), h_resp[:, :-1]], dim=1)
    # place row b's k-th response token at its column of the batch layout: prompt_length − 1 + k
    cols = (batch.prompt_lengths[:, None] - 1 + torch.arange(r_ids.shape[1])[None, :])
    cols = cols.clamp(max=batch.labels.shape[1] - 1)
    trained = batch.response_mask.bool().gather(1, cols) & r_mask.bool()
    lp, ent = _project(model, h_pred, r_ids, trained, temperature, chunk_size)
    logprobs = torch.zeros(batch.labels.shape, dtype=lp.dtype).scatter_add(1, cols, torch.where(trained, lp, 0.0))
    entropy = torch.zeros(batch.labels.shape, dtype=ent.dtype).scatter_add(1, cols, torch.where(trained, ent, 0.0))
    return logprobs, entropy


def groups_share_prompts(batch, group_size: int) -> bool:
    """True when every run of ``group_size`` consecutive rows holds one prompt (the collated layout)."""
    if group_size <= 1 or batch.size % group_size:
        return False
    lengths = batch.prompt_lengths.view(-1, group_size)
    if not (lengths == lengths[:, :1]).all():
        return False
    width = int(batch.prompt_lengths.max())
    ids = batch.input_ids[:, :width].view(-1, group_size, width)
    keep = torch.arange(width)[None, None, :] < lengths[:, :, None]
    return bool(((ids == ids[:, :1]) | ~keep).all())


def policy_logprobs_entropy(model, batch, group_size: int, temperature: float, chunk_size: int):
    """The training forward: shared-prompt when the rows come in groups sharing a prompt, else plain."""
    if groups_share_prompts(batch, group_size):
        return shared_prompt_logprobs_entropy(model, batch, group_size, temperature, chunk_size)
    return token_logprobs_entropy(model, batch, temperature, chunk_size)


class PolicyModule(torch.nn.Module):
    """The trainable policy as DeepSpeed sees it: the Hugging Face causal LM (``self.lm``) and a forward
    that returns (log-probs [B, T], entropies [B, T]) of a TrainBatch (:func:`policy_logprobs_entropy`).

    Computing them inside a module forward called through the engine is what lets ZeRO-3 gather every
    parameter they read: the chunked projection reads ``lm_head.weight`` outside ``lm_head.forward``, so it
    is registered as an external parameter of this module (outside any forward, ZeRO-3 holds an empty
    partition of it). ``hf_state_dict`` keys are the Hugging Face names (``lm.`` stripped).
    """

    def __init__(self, lm, zero_stage: int = 0):
        super().__init__()
        self.lm = lm
        if zero_stage == 3:
            import deepspeed

            deepspeed.zero.register_external_parameter(self, lm.lm_head.weight)

    def forward(self, batch, group_size: int, temperature: float, chunk_size: int):
        return policy_logprobs_entropy(self.lm, batch, group_size, temperature, chunk_size)


@torch.no_grad()
def old_policy_stats(engine, batch, micro_batch_size: int, temperature: float, chunk_size: int, group_size: int = 1):
    """Old-policy log-probs and entropies [B, T], computed without grad in micro-batches through ``engine``
    (a DeepSpeed engine around a :class:`PolicyModule`, or the module itself)."""
    outs = [engine(batch.rows(slice(i, i + micro_batch_size)), group_size, temperature, chunk_size)
            for i in range(0, batch.size, micro_batch_size)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
