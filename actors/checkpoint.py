"""Checkpoints in Hugging Face format plus everything needed to resume exactly.

``<run_dir>/checkpoints/step_N/`` holds ``config.json``, ``model.safetensors`` and the tokenizer
(loadable by ``transformers`` and vLLM as is), ``trainer_state/`` (DeepSpeed: optimizer and
module states), ``rng/rank<r>.pt`` (python, numpy and torch RNG of each worker), ``state.json``
(``step``; the data position follows from it) and ``manifest.json`` (every file's size and sha256).

Saving is a write (:func:`write_checkpoint`: every rank fsyncs what it wrote, rank 0 writes ``state.json``)
then a commit (:func:`commit_checkpoint`, ``core.checkpoint_files.commit``): rank 0 writes the manifest and
``COMPLETE`` last, each durably, so a crash or power loss
mid-save never leaves a checkpoint that resume would pick up. A failed write (disk full...) removes
the partial folder and raises :class:`~core.run_dir.RunDirError` naming the checkpoint and the cause;
earlier checkpoints are untouched. Pruning (``trainer.keep_checkpoints``) counts intact checkpoints only,
so the newest intact one is never deleted.
"""
from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

from actors.weights import full_state_dict
from core.checkpoint_files import STATE, TRAINER_STATE, commit, discard, verify
from core.durable import fsync_tree, reason, write_durably
from core.run_dir import RunDirError, checkpoint_dir, list_checkpoints, require_run_dir

DS_TAG = "deepspeed"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(engine, cfg, step: int, rank: int, tokenizer_path: str) -> str:
    """Collective: every rank must call it. :func:`write_checkpoint` then :func:`commit_checkpoint`; returns the
    checkpoint directory (committed: see module docstring)."""
    path = write_checkpoint(engine, cfg, step, rank, tokenizer_path)
    commit_checkpoint(cfg, path, step, rank)
    return path


def write_checkpoint(engine, cfg, step: int, rank: int, tokenizer_path: str) -> str:
    """Collective: every rank writes and fsyncs its files, rank 0 ``state.json``; not committed yet (no
    manifest, no ``COMPLETE``: resume does not see it). What must be durable before the commit (the step's
    metrics line, :mod:`actors.train_worker`) goes between this and :func:`commit_checkpoint`."""
    path = checkpoint_dir(cfg.run_dir, step)
    try:
        if rank == 0:
            _fresh_folder(cfg.run_dir, path)
        _barrier()
        _write_states(engine, path, rank, tokenizer_path)
        fsync_tree(path)  # this rank's files are complete: durable from this node (shared storage)
        _barrier()
        if rank == 0:
            write_durably(os.path.join(path, STATE), json.dumps({"step": step, "algorithm": cfg.algorithm.name}).encode())
    except (OSError, RuntimeError) as err:
        if isinstance(err, RunDirError):
            raise
        raise _save_failed(path, err) from err
    return path


def commit_checkpoint(cfg, path: str, step: int, rank: int) -> None:
    """Collective: rank 0 commits the written checkpoint ``path`` (manifest, ``COMPLETE``) and prunes old ones."""
    _barrier()
    if rank == 0:
        try:
            commit(path, step, cfg.trainer.checkpoint_checksums)
        except OSError as err:
            raise _save_failed(path, err) from err
        for old_path in checkpoints_to_remove(cfg):
            discard(old_path)
    _barrier()


def _fresh_folder(run_dir: str, path: str) -> None:
    """An empty ``path`` under the existing ``run_dir`` (never recreated: a deleted run_dir is an error);
    a folder left there (a crashed save, a demoted damaged checkpoint of the same step) is removed first."""
    require_run_dir(run_dir, f"checkpoint {path}")
    discard(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkdir(path)


def _write_states(engine, path: str, rank: int, tokenizer_path: str) -> None:
    """This rank's share of the checkpoint: DeepSpeed states, its RNG; rank 0 the HF model and tokenizer."""
    os.makedirs(os.path.join(path, "rng"), exist_ok=True)
    engine.save_checkpoint(os.path.join(path, TRAINER_STATE), tag=DS_TAG)
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               os.path.join(path, "rng", f"rank{rank}.pt"))
    state = full_state_dict(engine)  # collective under ZeRO-3
    if rank == 0:
        engine.module.lm.save_pretrained(path, state_dict=state, safe_serialization=True)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)


def _save_failed(path: str, err: BaseException) -> RunDirError:
    """The error of a failed save, after removing the partial folder (it never got ``COMPLETE``)."""
    try:
        discard(path)
        left = "the partial checkpoint was removed"
    except OSError as cleanup:
        left = f"the partial checkpoint (no COMPLETE, never resumed from) could not be removed: {reason(cleanup)}"
    if isinstance(err, OSError):
        cause = f"{reason(err)} ({err})"
    else:  # torch's zip writer reports a failed write as RuntimeError: say how much room is left
        cause = f"{type(err).__name__}: {err}"
        try:
            cause += f"; {shutil.disk_usage(os.path.dirname(path)).free} bytes free on its filesystem"
        except OSError:
            pass
    return RunDirError(f"cannot write checkpoint {path}: {cause}; {left}; earlier checkpoints are untouched")


def checkpoints_to_remove(cfg) -> list[str]:
    """Checkpoints older than the newest ``trainer.keep_checkpoints`` intact ones (sizes and headers checked,
    no checksums), oldest first. Damaged ones never count as kept, so the newest intact checkpoint survives
    whatever happened to the ones after it; nothing is removed while no checkpoint is intact."""
    found = list_checkpoints(cfg.run_dir)
    intact = [step for step, path in found if verify(path, step, checksums=False) is None]
    kept = intact[-cfg.trainer.keep_checkpoints:]
    if not kept:
        return []
    return [path for step, path in found if step < kept[0]]


def load_trainer_state(engine, run_dir: str, step: int, rank: int, seed: int) -> None:
    """Restore optimizer/module state and RNG of ``step``'s checkpoint (verified intact by the driver
    before any worker started: ``core.run_dir.resume_point``), or seed a fresh run."""
    if step == 0:
        random.seed(seed + rank)
        np.random.seed(seed + rank)
        torch.manual_seed(seed + rank)
        return
    path = checkpoint_dir(run_dir, step)
    loaded, _ = engine.load_checkpoint(os.path.join(path, TRAINER_STATE), tag=DS_TAG, load_optimizer_states=True,
                                       load_lr_scheduler_states=True)
    if loaded is None:  # DeepSpeed only logs a warning when it finds nothing to load
        raise RunDirError(f"DeepSpeed found no state to load in {os.path.join(path, TRAINER_STATE)} (tag {DS_TAG})")
    rng = torch.load(os.path.join(path, "rng", f"rank{rank}.pt"), weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
