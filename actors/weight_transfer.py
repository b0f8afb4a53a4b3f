"""The object-store weight path as a backend of vLLM's weight-transfer interface (``vllm.distributed.weight_transfer``).

vLLM 0.32 moves trainer weights into its engines through a pair of engines per backend, chosen by name from two
registries: an engine-side :class:`~vllm.distributed.weight_transfer.WeightTransferEngine` that vLLM's worker builds
from ``LLM(weight_transfer_config={"backend": name})`` (``WeightTransferEngineFactory``) and a trainer-side
:class:`~vllm.distributed.weight_transfer.TrainerWeightTransferEngine` (``WeightTransferTrainerFactory``), which
drives the engine's ``start_weight_update`` / ``update_weights`` / ``finish_weight_update`` through a
``VLLMWeightSyncClient``. Its own backends (``nccl``, ``ipc``, ...) are GPU-only (every update ends in
``torch.accelerator.synchronize()``, an error without an accelerator).

:func:`register` adds ``object_store`` to both registries, the way vLLM registers its own (by module path, loaded on
first use):

* trainer side, :class:`ObjectStoreTrainerEngine`: every train rank iterates the :class:`EngineWeights` source (the
  one full-weight gather, a collective under ZeRO-3); rank 0 puts the state dict in the Ray object store once and
  hands ``{"refs": [ref]}`` to the client;
* the client, :class:`WeightStoreClient`, is the :class:`~actors.weights.WeightStore` actor: ``finish_weight_update``
  publishes the round's update payloads under the round's version. The rollout actors *pull* them (each one when a
  shard needs a newer version than it holds, so with ``rollout.staleness`` > 0 an actor may skip versions) instead
  of vLLM's push to every engine;
* engine side, :class:`ObjectStoreEngine`: ``start`` / ``finish`` are vLLM's layerwise reload (what
  ``reload_weights`` does: the CPU backend's repacked layouts are rebuilt), ``update_weights`` fetches the refs and
  loads the tensors by their Hugging Face names. :func:`apply_update` drives it through the ``LLM``'s own RL API.

The engine is in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``actors.rollout.make_engine``), so registering in
the rollout actor's process reaches vLLM's worker; an engine subprocess would need it as a vLLM general plugin.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from vllm.distributed.weight_transfer.base import (
    ParamMeta,
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

BACKEND = "object_store"


def register() -> None:
    """Register ``object_store`` with vLLM's engine-side and trainer-side factories (idempotent)."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory, WeightTransferTrainerFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, __name__, "ObjectStoreEngine")
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, __name__, "ObjectStoreTrainerEngine")


def engine_kwargs(backend: str) -> dict:
    """``LLM(...)`` arguments that give the engine the weight-transfer backend ``backend`` (registered first)."""
    if backend == BACKEND:
        register()
    return {"weight_transfer_config": {"backend": backend}}


# ---- engine side (inside vLLM's worker) ---------------------------------------------------------------------


@dataclass
class ObjectStoreInitInfo(WeightTransferInitInfo):
    """Nothing to rendezvous: the engine and the trainer already share Ray's object store."""


@dataclass
class ObjectStoreUpdateInfo(WeightTransferUpdateInfo):
    """One update chunk: object refs of ``{Hugging Face name: CPU tensor}`` dicts."""

    refs: list = field(default_factory=list)


class ObjectStoreEngine(WeightTransferEngine[ObjectStoreInitInfo, ObjectStoreUpdateInfo]):
    """Engine side of ``object_store`` (module docstring)."""

    init_info_cls = ObjectStoreInitInfo
    update_info_cls = ObjectStoreUpdateInfo

    def init_transfer_engine(self, init_info: ObjectStoreInitInfo) -> None:
        """No transport to open."""

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        """Load one chunk; no device synchronisation (the base class's needs an accelerator)."""
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: ObjectStoreUpdateInfo) -> None:
        import ray

        for ref in update_info.refs:
            self.model.load_weights(list(ray.get(ref).items()))

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def shutdown(self) -> None:
        """Nothing held."""


def _quiet_reload_warning() -> None:
    """vLLM warns on every reload that RotaryEmbedding "failed to load weights": it has no checkpoint
    tensors (its cos/sin cache is derived and kept), so the warning is noise once per step."""
    import logging

    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)


def init_engine(llm) -> None:
    """The engine's side of the handshake (``object_store`` needs no trainer information)."""
    llm.init_weight_transfer_engine({"init_info": {}})


def apply_update(llm, updates: list[dict]) -> None:
    """One weight update of an in-process ``LLM`` through its weight-transfer engine (start, every chunk of
    ``updates``, finish), then its prefix cache dropped (the KV of the old weights)."""
    _quiet_reload_warning()
    llm.start_weight_update()
    for info in updates:
        llm.update_weights({"update_info": info})
    llm.finish_weight_update()
    llm.reset_prefix_cache()


# ---- trainer side (the Ray Train workers) -------------------------------------------------------------------


class EngineWeights(WeightSource):
    """The DeepSpeed engine's full weights under their Hugging Face names (``actors.weights.full_state_dict``):
    iterating gathers them (every rank must iterate; rank 0 yields them, the others nothing)."""

    def __init__(self, engine):
        self.engine = engine

    def metadata(self) -> list[ParamMeta]:
        """Name, dtype and full shape of every tensor iteration yields, in its order, without gathering."""
        tensors = self.engine.module.state_dict(keep_vars=True).items()  # the parameters themselves (ZeRO-3: ds_shape)
        return [ParamMeta(k.removeprefix("lm."), t.dtype, tuple(getattr(t, "ds_shape", t.shape))) for k, t in tensors]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        from actors.weights import full_state_dict

        return iter(full_state_dict(self.engine).items())


@dataclass
class ObjectStoreTrainerInitInfo(TrainerInitInfo):
    """Trainer-side init info of ``object_store``: only ``rank`` (rank 0 sends)."""

    backend: ClassVar[str] = BACKEND


class WeightStoreClient:
    """The engines' control plane as a mailbox (a structural ``VLLMWeightSyncClient``): the round's update payloads
    are collected and ``finish_weight_update`` publishes them to the :class:`~actors.weights.WeightStore` under
    ``version`` (set by the caller before each round); rollout actors apply them when they need that version."""

    def __init__(self, store):
        self.store, self.version, self.pending = store, None, []

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        """Each rollout engine initialises itself (:func:`init_engine`): nothing to forward."""

    def start_weight_update(self) -> None:
        self.pending = []

    def update_weights(self, update_info) -> None:
        self.pending += update_info if isinstance(update_info, list) else [update_info]

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        import ray

        version = int(weight_version) if weight_version is not None else self.version
        ray.get(self.store.publish.remote(version, self.pending))


class ObjectStoreTrainerEngine(TrainerWeightTransferEngine[ObjectStoreTrainerInitInfo]):
    """Trainer side of ``object_store`` (module docstring)."""

    init_info_cls = ObjectStoreTrainerInitInfo

    @classmethod
    def trainer_init(cls, init_info: ObjectStoreTrainerInitInfo, *, client, source: WeightSource | None = None):
        if source is None:
            raise ValueError("object_store weight transfer needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender)
        if engine.is_sender:
            client.init_weight_transfer_engine({})
        return engine

    def send_weights(self) -> None:
        import ray

        state = dict(self.source)  # every rank: the gather is a collective under ZeRO-3
        if not self.is_sender:
            return
        self.client.start_weight_update()
        self.client.update_weights({"refs": [ray.put(state)]})
        self.client.finish_weight_update()


def trainer_sender(engine, rank: int, store):
    """The trainer-side engine of this train rank, built through vLLM's ``WeightTransferTrainerFactory``."""
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    register()
    return WeightTransferTrainerFactory.trainer_init(ObjectStoreTrainerInitInfo(rank=rank),
                                                     client=WeightStoreClient(store), source=EngineWeights(engine))
