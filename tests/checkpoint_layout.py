"""A committed checkpoint with the training job's layout, built without DeepSpeed (for quick tests).

``write_checkpoint`` copies a Hugging Face checkpoint (config, safetensors, tokenizer) to
``<run_dir>/checkpoints/step_N``, adds DeepSpeed-like ``trainer_state/`` (``latest`` + a ``torch.save``
archive), ``rng/rank0.pt`` and ``state.json``, and commits it with the job's own
``core.checkpoint_files.commit`` (manifest, COMPLETE). Tests that need DeepSpeed's real files build an
engine instead (tests/actors/test_checkpoint.py).
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from core.checkpoint_files import commit
from core.run_dir import checkpoint_dir


def write_checkpoint(run_dir, step: int, source: str, checksums: bool = True) -> str:
    path = checkpoint_dir(str(run_dir), step)
    shutil.copytree(source, path)
    os.makedirs(os.path.join(path, "trainer_state", "deepspeed"))
    with open(os.path.join(path, "trainer_state", "latest"), "w") as f:
        f.write("deepspeed")
    torch.save({"module": {"w": torch.full((64,), float(step))}, "optimizer": {"step": step}},
               os.path.join(path, "trainer_state", "deepspeed", "mp_rank_00_model_states.pt"))
    os.makedirs(os.path.join(path, "rng"))
    torch.save({"torch": torch.get_rng_state()}, os.path.join(path, "rng", "rank0.pt"))
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump({"step": step, "algorithm": "eapo"}, f)
    commit(path, step, checksums)
    return path
