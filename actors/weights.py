"""Moving new policy weights from the train workers to the rollout engines.

Rank 0 of the Ray Train worker group publishes a versioned state dict to the named
:class:`WeightStore` actor (the tensors go to the object store once; the store only holds the
reference). Rollout actors ask the store for "at least version v" before they sample a shard of
step ``s`` (``v = s - staleness``); the call blocks until the trainer has published it, which is
what keeps training on-policy at staleness 0. Version ``k`` = weights after ``k`` optimizer
steps of the run (a resumed run starts at its checkpoint's step).

On GPU clusters the same protocol carries the version handshake; the tensors themselves may
travel by the object store (simple, any topology) — vLLM's NCCL weight-transfer engine is the
faster path for large models and is left as a drop-in replacement for :func:`load_into_vllm`.
"""
from __future__ import annotations

import asyncio
from typing import Any

import ray

STORE_NAME = "eapo_weight_store"


@ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1, max_task_retries=-1)
class WeightStore:
    """Latest published weights, as ``(version, [ObjectRef of {name: tensor}])``.

    If the actor dies, Ray restarts it and retries the calls in flight; the restarted store knows only its
    initial version, which is safe: the trainer publishes a newer version every step, and a rollout actor
    already holding version v never loads an older one. After a train worker-group restart the stream's
    factory calls :meth:`reset` to the checkpoint's version before any rollout actor asks.
    """

    def __init__(self, initial_version: int):
        self.version = initial_version
        self.refs: list[Any] = []  # empty: the weights are those the engines loaded from disk
        self.cond = asyncio.Condition()

    async def publish(self, version: int, refs: list) -> None:
        async with self.cond:
            if version <= self.version:
                raise ValueError(f"weight version {version} is not newer than {self.version}")
            self.version, self.refs = version, refs
            self.cond.notify_all()

    async def wait_for(self, min_version: int, timeout_s: float | None = None) -> tuple[int, list]:
        """Block until version >= min_version (at most ``timeout_s``); returns the latest (version, refs).

        Raises TimeoutError naming both versions when the trainer has not published in time."""
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(lambda: self.version >= min_version), timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no weights of version >= {min_version} after {timeout_s:.0f} s: the trainer "
                                   f"last published version {self.version}") from None
            return self.version, self.refs

    async def reset(self, version: int) -> None:
        """Forget newer weights: a restarted trainer continues from the checkpoint of ``version``."""
        async with self.cond:
            self.version, self.refs = version, []
            self.cond.notify_all()

    async def latest(self) -> int:
        return self.version


def get_or_create_store(initial_version: int):
    return WeightStore.options(name=STORE_NAME, get_if_exists=True, ).remote(
        initial_version)


def full_state_dict(engine) -> dict:
    """The policy's full (unsharded) weights as CPU tensors under their Hugging Face names.

    The one gather for both publishing and checkpoints. Under ZeRO-3 every rank holds a partition, so this
    is a collective: every rank must call it; rank 0 gets the dict, the others ``{}`` (nothing to copy).
    ``engine.module`` is the :class:`~actors.policy_forward.PolicyModule` (its ``lm.`` prefix is stripped).
    """
    import contextlib

    module = engine.module
    gather = contextlib.nullcontext()
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    with gather:
        if engine.global_rank != 0:
            return {}
        return {k.removeprefix("lm."): v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _load_on_worker(worker, named_tensors: dict) -> None:
    """Runs inside vLLM's worker (via ``collective_rpc``): reload HF-named tensors in place.

    ``reload_weights`` (not ``model.load_weights``) re-runs the loaders on the layout the engine
    built at start-up, including the CPU backend's repacked weights.
    """
    worker.model_runner.reload_weights(weights_iterator=list(named_tensors.items()))


def _quiet_reload_warning() -> None:
    """vLLM warns on every reload that RotaryEmbedding "failed to load weights": it has no checkpoint
    tensors (its cos/sin cache is derived and kept), so the warning is noise once per step."""
    import logging

    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)


def load_into_vllm(llm, named_tensors: dict) -> None:
    """Replace an in-process vLLM engine's weights and drop its prefix cache (stale KV)."""
    _quiet_reload_warning()
    llm.collective_rpc(_load_on_worker, args=(named_tensors,))
    llm.reset_prefix_cache()
