"""The in-run baseline of ``pipeline.bench``: the least a single process does for one RL step on the same work.

On the run's initial policy, in the bench's own process (no Ray, vLLM or DeepSpeed), each step takes the same
``trainer.prompts_per_step`` prompts the pipeline's step takes (the same seeded shard order,
``pipeline.data.ShardPrompts``) and

1. samples ``rollout.n`` responses per prompt with Hugging Face ``generate`` (``rollout.temperature``,
   ``rollout.top_p``, no top-k, at most ``rollout.max_tokens`` new tokens, ending at the policy's EOS);
2. scores them with the run's own :class:`~actors.reward.Scorer` (verifier, overlong shaping, the algorithm's group
   advantages), so the rewards and advantages are those the pipeline would compute for the same responses;
3. takes one forward of the whole batch at the sampling temperature, the plain token-mean policy-gradient loss
   ``-Σ Â_i log π(o_t) / Σ |o|`` (no ratio, clipping or credit shaping) and one ``torch.optim.AdamW`` step
   (``trainer.lr``, ``trainer.weight_decay``) on the whole batch.

No dynamic sampling, no weight sync, no hand-off: it is the bar the pipeline's orchestration has to clear. Each
step's row carries the keys of a ``metrics.jsonl`` row that :mod:`pipeline.bench_summary` reads
(``timing/{rollout_s,reward_s,train_s,step_s}``, ``rollout/tokens_generated``, ``train/tokens_trained``,
``dynamic_sampling/kept_groups``). Torch uses the process's threads (reported as ``threads``).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from core.config import Config


def step_prompts(cfg: Config, table: dict, step: int) -> tuple[list[list[int]], list[str]]:
    """The prompt ids and golds of the pipeline's step ``step``: its ``trainer.prompts_per_step`` prompts in the
    seeded epoch order (the shards of one step, concatenated)."""
    from pipeline.data import ShardPrompts

    shard = ShardPrompts(table, cfg.trainer.prompts_per_step, 1, cfg.seed, cfg.data.shuffle)({"id": np.asarray([step])})
    shard = shard["payload"][0]
    return shard.prompt_ids, shard.golds


def left_pad(prompt_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids [P, L], attention mask [P, L]) of the prompts, padded on the left (``generate``'s layout)."""
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    return ids, mask


def response_mask(responses: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """[N, T] 1 for each response's tokens up to and including its first EOS (all of them without one)."""
    is_eos = torch.isin(responses, torch.tensor(eos_ids))
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


def pg_loss(model, ids: torch.Tensor, attention: torch.Tensor, prompt_len: int, responses: torch.Tensor,
            mask: torch.Tensor, advantages: torch.Tensor, temperature: float) -> torch.Tensor:
    """Token-mean policy-gradient loss of the responses after ``prompt_len`` prompt columns (one forward)."""
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
    logits = logits[:, prompt_len - 1:-1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    mask = mask.to(logp.dtype)
    return -(advantages.to(logp.dtype).unsqueeze(-1) * logp * mask).sum() / mask.sum().clamp(min=1)


class BaselineLoop:
    """The baseline's policy, optimizer and scorer; :meth:`step` runs one step and returns its row."""

    def __init__(self, cfg: Config, init_path: str, tokenizer):
        from actors.reward import Scorer
        from actors.train_worker import load_policy, optimizer_settings

        self.cfg, self.tokenizer = cfg, tokenizer
        self.model = load_policy(cfg, init_path)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **optimizer_settings(cfg))
        self.scorer = Scorer(cfg)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def step(self, step: int, prompt_ids: list[list[int]], golds: list[str]) -> dict:
        r, t0 = self.cfg.rollout, time.perf_counter()
        torch.manual_seed(self.cfg.seed * 100003 + step)
        ids, attention = left_pad(prompt_ids, self.pad_id)
        self.model.eval()
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=attention, do_sample=True, num_return_sequences=r.n,
                                      temperature=r.temperature, top_p=r.top_p, top_k=0, max_new_tokens=r.max_tokens,
                                      pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        responses = out[:, ids.shape[1]:]
        mask = response_mask(responses, self.eos_ids)
        t1 = time.perf_counter()
        lengths = mask.sum(-1).tolist()
        texts = self.tokenizer.batch_decode([row[:n] for row, n in zip(responses.tolist(), lengths)],
                                            skip_special_tokens=True)
        rewards, _, _ = self.scorer.score(texts, [g for g in golds for _ in range(r.n)], lengths)
        advantages = torch.from_numpy(self.scorer.advantages(rewards, r.n))
        t2 = time.perf_counter()
        self.model.train()
        full_attention = torch.cat([attention.repeat_interleave(r.n, 0), mask], -1)
        loss = pg_loss(self.model, out, full_attention, ids.shape[1], responses, mask, advantages, r.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        t3 = time.perf_counter()
        trained = int(((advantages != 0).unsqueeze(-1) & mask.bool()).sum())
        return {"step": step + 1, "timing/rollout_s": t1 - t0, "timing/reward_s": t2 - t1, "timing/train_s": t3 - t2,
                "timing/step_s": t3 - t0, "rollout/tokens_generated": float(sum(lengths)),
                "train/tokens_trained": float(trained), "train/no_signal": float(trained == 0),
                "dynamic_sampling/kept_groups": float(len(prompt_ids)), "loss": float(loss.detach())}


def run_baseline(cfg: Config, init_path: str, tokenizer, table: dict, steps: int) -> list[dict]:
    """``steps`` baseline steps on the pipeline's first ``steps`` steps' prompts; one row per step."""
    loop = BaselineLoop(cfg, init_path, tokenizer)
    return [loop.step(s, *step_prompts(cfg, table, s)) for s in range(steps)]
