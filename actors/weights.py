"""Moving new policy weights from the train workers to the rollout engines: the version protocol.

Rank 0 of the Ray Train worker group publishes a version's weight-update payloads to the named
:class:`WeightStore` actor through vLLM's weight-transfer interface (``actors.weight_transfer``: the
``object_store`` backend puts the state dict in the object store once; the store only holds the payload with
its reference). Rollout actors ask the store for "at least version v" before they sample a shard of
step ``s`` (``v = s - staleness``); the call blocks until the trainer has published it, which is
what keeps training on-policy at staleness 0, and they apply the payloads through their engine's
weight-transfer engine. Version ``k`` = weights after ``k`` optimizer steps of the run (a resumed run starts
at its checkpoint's step).
"""
from __future__ import annotations

import asyncio
from typing import Any

import ray

from core.faults import point as fault_point

STORE_NAME = "eapo_weight_store"


@ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1, max_task_retries=-1)
class WeightStore:
    """Latest published weights, as ``(version, [update payload])``: the ``update_info`` dicts of the version's
    weight-transfer round (``object_store``: ``{"refs": [ObjectRef of {name: tensor}]}``).

    If the actor dies, Ray restarts it and retries the calls in flight; the restarted store knows only its
    initial version, which is safe: the trainer publishes a newer version every step, and a rollout actor
    already holding version v never loads an older one. After a train worker-group restart the stream's
    factory calls :meth:`reset` to the checkpoint's version before any rollout actor asks.
    """

    def __init__(self, initial_version: int, run_dir: str = ""):
        self.version, self.run_dir = initial_version, run_dir  # run_dir: where fault markers go (tests only)
        self.updates: list[Any] = []  # empty: the weights are those the engines loaded from disk
        self.cond = asyncio.Condition()

    async def publish(self, version: int, updates: list) -> None:
        if self.run_dir:
            fault_point("store_publish", version, self.run_dir)  # EAPO_FAULTS only: killed with the call in flight
        async with self.cond:
            if version <= self.version:
                raise ValueError(f"weight version {version} is not newer than {self.version}")
            self.version, self.updates = version, updates
            self.cond.notify_all()

    async def wait_for(self, min_version: int, timeout_s: float | None = None) -> tuple[int, list]:
        """Block until version >= min_version (at most ``timeout_s``); returns the latest (version, updates).

        Raises TimeoutError naming both versions when the trainer has not published in time."""
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(lambda: self.version >= min_version), timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no weights of version >= {min_version} after {timeout_s:.0f} s: the trainer "
                                   f"last published version {self.version}") from None
            return self.version, self.updates

    async def reset(self, version: int) -> None:
        """Forget newer weights: a restarted trainer continues from the checkpoint of ``version``."""
        async with self.cond:
            self.version, self.updates = version, []
            self.cond.notify_all()

    async def latest(self) -> int:
        return self.version


def get_or_create_store(initial_version: int, run_dir: str = ""):
    """The run's named store (``run_dir``: for ``EAPO_FAULTS``' ``store_publish`` point)."""
    return WeightStore.options(name=STORE_NAME, get_if_exists=True).remote(initial_version, run_dir)


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
