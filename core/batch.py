"""The batch types that cross stage boundaries.

One rollout *shard* is the unit that flows through the Ray Data stream: a fixed slice of one
step's prompts, sampled G times by one rollout actor, scored, with group advantages. All G
responses of a prompt live in the same shard, so group statistics (advantages, EAPO's entropy
mean/std) never need data from another shard. A train worker takes ``shards_per_worker`` shards
per step and collates them into one :class:`TrainBatch` of padded tensors.

Shapes: B = responses, L = padded prompt+response length, T = L - 1 next-token positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # core imports no heavy framework at module import time (tests/test_rooms.py)
    import torch


@dataclass
class PromptShard:
    """Prompts of one shard. ``prompt_ids[j]`` is the tokenised (templated) prompt j."""

    step: int
    shard: int
    uids: list[str]
    prompt_ids: list[list[int]]
    golds: list[str]
    refill_prompt_ids: list[list[int]] = field(default_factory=list)  # dynamic sampling reserve
    refill_golds: list[str] = field(default_factory=list)


@dataclass
class RolloutShard:
    """Sampled, scored responses of one shard: G per prompt, prompt j owns rows [j*G, (j+1)*G).

    With dynamic sampling the prompts are those kept for training (informative groups first, then
    refills), so ``prompt_ids`` may differ from the step's :class:`PromptShard`; ``train_mask`` [P*G]
    is False for responses of groups left in only to keep the shape (no gradient, not counted).
    ``metrics`` holds per-shard scalars (first-round reward, dynamic-sampling and held-out figures).
    """

    step: int
    shard: int
    group_size: int
    prompt_ids: list[list[int]]
    golds: list[str]
    response_ids: list[list[int]]
    response_texts: list[str]
    behaviour_logprobs: list[list[float]]
    truncated: list[bool]
    weight_version: int
    rewards: np.ndarray | None = None  # [P*G] float32
    verdicts: list[str] | None = None
    advantages: np.ndarray | None = None  # [P*G] float32, sequence level
    train_mask: np.ndarray | None = None  # [P*G] bool; None = all responses train
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_responses(self) -> int:
        return len(self.response_ids)


@dataclass
class TrainBatch:
    """Padded CPU tensors for the policy update: B responses, L = padded prompt+response length,
    T = L − 1 next-token positions. The rows of a group are consecutive and share their prompt."""

    input_ids: torch.Tensor  # [B, L] long, right-padded with the pad id
    attention_mask: torch.Tensor  # [B, L] long, 1 on prompt and response tokens
    labels: torch.Tensor  # [B, T] long, = input_ids[:, 1:]
    response_mask: torch.Tensor  # [B, T] float, 1 where labels[b, t] is a response token of a trained row
    #                              (rows dynamic sampling kept only for shape are all 0)
    advantages: torch.Tensor  # [B] float, sequence-level advantage of row b
    rewards: torch.Tensor  # [B] float
    group_ids: torch.Tensor  # [B] long, unique per prompt across the batch
    behaviour_logprobs: torch.Tensor  # [B, T] float, the rollout engine's log-probs, 0 outside responses
    prompt_lengths: torch.Tensor  # [B] long, row b's prompt is input_ids[b, :prompt_lengths[b]]

    def rows(self, index) -> "TrainBatch":
        """The sub-batch of the given row indices (a slice or index tensor)."""
        return TrainBatch(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def object_column(items: list) -> np.ndarray:
    """1-D object array of ``items`` (numpy would otherwise stack equal-length sequences into 2-D)."""
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


def collate(shards: list[RolloutShard], pad_id: int) -> TrainBatch:
    """Stack shards into one right-padded :class:`TrainBatch` (see its docstring for shapes)."""
    import torch

    seqs, resp_starts, groups, adv, rew, blp, trained = [], [], [], [], [], [], []
    for s_idx, shard in enumerate(shards):
        keep = shard.train_mask if shard.train_mask is not None else np.ones(shard.num_responses, bool)
        for i, resp in enumerate(shard.response_ids):
            prompt = shard.prompt_ids[i // shard.group_size]
            seqs.append(list(prompt) + list(resp))
            resp_starts.append(len(prompt))
            groups.append(s_idx * 1_000_000 + i // shard.group_size)
            blp.append(shard.behaviour_logprobs[i])
            trained.append(bool(keep[i]))
        adv.append(np.asarray(shard.advantages, dtype=np.float32))
        rew.append(np.asarray(shard.rewards, dtype=np.float32))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    resp_mask = torch.zeros((len(seqs), width - 1), dtype=torch.float32)
    beh = torch.zeros((len(seqs), width - 1), dtype=torch.float32)
    for b, (seq, start) in enumerate(zip(seqs, resp_starts)):
        ids[b, : len(seq)] = torch.tensor(seq)
        attn[b, : len(seq)] = 1
        resp_mask[b, start - 1: len(seq) - 1] = float(trained[b])
        n = len(seq) - start
        beh[b, start - 1: start - 1 + n] = torch.tensor(blp[b][:n], dtype=torch.float32)
    return TrainBatch(
        input_ids=ids, attention_mask=attn, labels=ids[:, 1:].clone(), response_mask=resp_mask,
        advantages=torch.from_numpy(np.concatenate(adv)), rewards=torch.from_numpy(np.concatenate(rew)),
        group_ids=torch.tensor(groups, dtype=torch.long), behaviour_logprobs=beh,
        prompt_lengths=torch.tensor(resp_starts, dtype=torch.long),
    )
