"""Typed objects handed across stage boundaries when the pipeline builds its remote parts.

A rollout actor is built from one :class:`RolloutSetup` (``map_batches(fn_constructor_kwargs=...)``), a
Ray Train worker from one :class:`TrainLoopSetup` (Ray's ``train_loop_config`` dict holds it under
``"setup"``): no positional tuples, no loose dicts. The batches themselves are ``core.batch``'s types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from core.config import Config


@dataclass
class HeldoutSet:
    """Held-out problems for greedy accuracy: tokenised, chat-templated prompts and their gold answers
    (``prompt_ids[j]`` answers ``golds[j]``). Empty lists: no held-out accuracy."""

    prompt_ids: list[list[int]]
    golds: list[str]

    def __len__(self) -> int:
        return len(self.golds)


@dataclass
class RolloutSetup:
    """What a rollout actor is built from: the run's config, the checkpoint its engine starts from and
    that checkpoint's weight version (the step it was saved at; 0 = the initial policy), and the
    held-out set it measures every ``heldout.every`` steps."""

    cfg: Config
    model_path: str
    initial_version: int
    heldout: HeldoutSet


@dataclass
class TrainLoopSetup:
    """What a Ray Train worker is built from.

    cfg: the run's config; initial_path: the initial policy, where a run without checkpoints starts (the
    worker finds where the run is itself, ``core.run_dir.start_point``, also after a restart);
    reference_path: the frozen KL reference when ``algorithm.kl_coef > 0``; tokenizer_path: copied into
    every checkpoint; pad_id: the tokenizer's pad token; logger_factory: callable(start_step) that makes
    rank 0's metrics logger.
    """

    cfg: Config
    initial_path: str
    reference_path: str
    tokenizer_path: str
    pad_id: int
    logger_factory: Callable[[int], Any]
