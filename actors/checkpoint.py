"""Checkpoints in Hugging Face format plus everything needed to resume exactly.

``<run_dir>/checkpoints/step_N/`` holds ``config.json``, ``model.safetensors`` and the tokenizer
(loadable by ``transformers`` and vLLM as is), ``trainer_state/`` (DeepSpeed: optimizer and
module states), ``rng/rank<r>.pt`` (python, numpy and torch RNG of each worker) and
``state.json`` (``step``; the data position follows from it). ``COMPLETE`` is written last, so a
crash mid-save never leaves a checkpoint that resume would pick up.
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
from core.run_dir import checkpoint_dir, list_checkpoints

DS_TAG = "deepspeed"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(engine, cfg, step: int, rank: int, tokenizer_path: str) -> str:
    """Collective: every rank must call it. Returns the checkpoint directory."""
    path = checkpoint_dir(cfg.run_dir, step)
    os.makedirs(os.path.join(path, "rng"), exist_ok=True)
    engine.save_checkpoint(os.path.join(path, "trainer_state"), tag=DS_TAG)
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               os.path.join(path, "rng", f"rank{rank}.pt"))
    state = full_state_dict(engine)  # collective under ZeRO-3
    if rank == 0:
        engine.module.lm.save_pretrained(path, state_dict=state, safe_serialization=True)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)
    _barrier()
    if rank == 0:
        with open(os.path.join(path, "state.json"), "w") as f:
            json.dump({"step": step, "algorithm": cfg.algorithm.name}, f)
        open(os.path.join(path, "COMPLETE"), "w").close()
        for old_path in checkpoints_to_remove(cfg):
            shutil.rmtree(old_path, ignore_errors=True)
    _barrier()
    return path


def checkpoints_to_remove(cfg) -> list[str]:
    """Complete checkpoints of ``run_dir`` beyond the newest ``trainer.keep_checkpoints`` (oldest first)."""
    return [path for _, path in list_checkpoints(cfg.run_dir)[: -cfg.trainer.keep_checkpoints]]


def load_trainer_state(engine, run_dir: str, step: int, rank: int, seed: int) -> None:
    """Restore optimizer/module state and RNG of ``step``'s checkpoint, or seed a fresh run."""
    if step == 0:
        random.seed(seed + rank)
        np.random.seed(seed + rank)
        torch.manual_seed(seed + rank)
        return
    path = checkpoint_dir(run_dir, step)
    engine.load_checkpoint(os.path.join(path, "trainer_state"), tag=DS_TAG, load_optimizer_states=True,
                           load_lr_scheduler_states=True)
    rng = torch.load(os.path.join(path, "rng", f"rank{rank}.pt"), weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
