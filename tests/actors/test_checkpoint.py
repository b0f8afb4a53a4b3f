"""Checkpoints written by a real (single-process, gloo) DeepSpeed engine on a tiny policy.

A save is committed (manifest, COMPLETE) and verifies; a damaged newest checkpoint (truncated weights, a
missing DeepSpeed file, garbage state.json, a flipped byte) is named at resume and the run falls back to
the previous one, which DeepSpeed then loads exactly; a full disk during the save (ENOSPC injected on
purpose into the write and into the fsync) names the checkpoint and the cause, leaves no partial folder
and does not touch the earlier checkpoint; pruning never deletes the newest intact checkpoint.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os

import pytest
import torch
import torch.distributed as dist

from actors.checkpoint import checkpoints_to_remove, load_trainer_state, save_checkpoint
from core.checkpoint_files import COMPLETE, MANIFEST, verify
from core.run_dir import RunDirError, list_checkpoints, resume_point
from pipeline.config import compose
from tests.checkpoint_layout import write_checkpoint


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from task.tiny_model import build_random_policy, tiny_spec

    spec = tiny_spec(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=64)
    return build_random_policy(str(tmp_path_factory.mktemp("policy")), seed=0, spec=spec)


@pytest.fixture(scope="module", autouse=True)
def process_group(tmp_path_factory):
    if not dist.is_initialized():
        init = tmp_path_factory.mktemp("pg") / "init"
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29534")
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    yield


@pytest.fixture(scope="module")
def base_cfg():
    return compose()


def config(base, run_dir, **trainer):
    cfg = dataclasses.replace(base, run_dir=str(run_dir))
    cfg.trainer = dataclasses.replace(base.trainer, **{"lr": 1e-2, **trainer})
    return cfg


def engine_for(cfg, policy):
    from actors.train_worker import build_engine

    return build_engine(cfg, policy, 1, 1)


def optimizer_step(engine) -> None:
    """One real AdamW step (a toy loss on every parameter), so consecutive checkpoints differ."""
    loss = sum((p.float() ** 2).sum() for p in engine.module.parameters())
    engine.backward(loss)
    engine.step()


def params(engine) -> dict:
    return {k: v.detach().clone() for k, v in engine.module.named_parameters()}


def snapshot(path: str) -> dict:
    """Every file of a folder with its bytes."""
    out = {}
    for folder, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), path)] = f.read()
    return out


@pytest.fixture
def two_checkpoints(tmp_path, policy, base_cfg):
    """step_1 and step_2 of a real engine (one optimizer step apart); the engine's parameters at step 1."""
    cfg = config(base_cfg, tmp_path / "run", keep_checkpoints=5)
    os.makedirs(cfg.run_dir)
    engine = engine_for(cfg, policy)
    optimizer_step(engine)
    first = save_checkpoint(engine, cfg, 1, 0, policy)
    at_step_1 = params(engine)
    optimizer_step(engine)
    second = save_checkpoint(engine, cfg, 2, 0, policy)
    return cfg, first, second, at_step_1


def test_a_saved_checkpoint_is_committed_and_intact(two_checkpoints):
    cfg, first, second, _ = two_checkpoints
    for step, path in ((1, first), (2, second)):
        assert verify(path, step, checksums=True) is None
        manifest = json.loads(open(os.path.join(path, MANIFEST)).read())
        assert {"model.safetensors", "config.json", "tokenizer.json", "state.json", "rng/rank0.pt",
                "trainer_state/latest", "trainer_state/deepspeed/mp_rank_00_model_states.pt"} <= set(manifest["files"])
        assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
        assert os.path.exists(os.path.join(path, COMPLETE))
    assert resume_point(cfg.run_dir, checksums=True, log=pytest.fail) == (2, second)


def truncate_weights(path):
    weights = os.path.join(path, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 100)
    return "model.safetensors has"


def remove_deepspeed_states(path):
    os.unlink(os.path.join(path, "trainer_state", "deepspeed", "mp_rank_00_model_states.pt"))
    return "trainer_state/deepspeed/mp_rank_00_model_states.pt is missing"


def garbage_state(path):
    with open(os.path.join(path, "state.json"), "w") as f:
        f.write("\x00garbage")
    return "state.json has"


def flip_a_byte(path):
    states = os.path.join(path, "trainer_state", "deepspeed", "mp_rank_00_model_states.pt")
    with open(states, "r+b") as f:
        f.seek(os.path.getsize(states) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x55]))
    return "trainer_state/deepspeed/mp_rank_00_model_states.pt does not match its sha256"


@pytest.mark.parametrize("damage", [truncate_weights, remove_deepspeed_states, garbage_state, flip_a_byte])
def test_resume_falls_back_to_the_previous_checkpoint_and_loads_it(two_checkpoints, policy, damage):
    cfg, first, second, at_step_1 = two_checkpoints
    expected = damage(second)
    warnings = []
    assert resume_point(cfg.run_dir, checksums=True, log=warnings.append) == (1, first)
    assert len(warnings) == 1 and warnings[0].startswith(f"WARNING: checkpoint {second} is damaged: {expected}")
    # the workers load what passed: DeepSpeed restores step 1's weights exactly, the HF files load too
    engine = engine_for(cfg, policy)
    load_trainer_state(engine, cfg.run_dir, 1, 0, cfg.seed)
    for name, value in params(engine).items():
        torch.testing.assert_close(value, at_step_1[name], rtol=0, atol=0)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(first)


def full_disk_on_write(monkeypatch):
    """ENOSPC from the first torch.save (DeepSpeed's states): half of it written, then the disk is full."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", save)
    return "mp_rank_00_model_states.pt"


def full_disk_on_fsync(monkeypatch):
    """ENOSPC reported when the weights are flushed (delayed allocation, NFS): the write itself succeeded."""
    import core.durable

    real_fsync = core.durable.fsync_file

    def fsync_file(path):
        if path.endswith("model.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_fsync(path)

    monkeypatch.setattr(core.durable, "fsync_file", fsync_file)
    return "model.safetensors"


@pytest.mark.parametrize("fault", [full_disk_on_write, full_disk_on_fsync])
def test_a_full_disk_names_the_checkpoint_and_keeps_the_earlier_one(tmp_path, policy, base_cfg, monkeypatch, fault):
    cfg = config(base_cfg, tmp_path / "run", keep_checkpoints=1)
    os.makedirs(cfg.run_dir)
    engine = engine_for(cfg, policy)
    first = save_checkpoint(engine, cfg, 1, 0, policy)
    before = snapshot(first)
    optimizer_step(engine)
    failing_file = fault(monkeypatch)
    second = os.path.join(cfg.run_dir, "checkpoints", "step_2")
    with pytest.raises(RunDirError) as info:
        save_checkpoint(engine, cfg, 2, 0, policy)
    message = str(info.value)
    assert message.startswith(f"cannot write checkpoint {second}: no space left on device"), message
    assert failing_file in message and "partial checkpoint was removed" in message
    assert not os.path.exists(second)
    assert snapshot(first) == before and verify(first, 1, checksums=True) is None
    assert list_checkpoints(cfg.run_dir) == [(1, first)]


def test_a_deleted_run_dir_is_not_recreated_by_a_save(tmp_path, policy, base_cfg):
    import shutil

    cfg = config(base_cfg, tmp_path / "run")
    os.makedirs(cfg.run_dir)
    engine = engine_for(cfg, policy)
    shutil.rmtree(cfg.run_dir)
    with pytest.raises(RunDirError, match=f"run_dir {cfg.run_dir} no longer exists"):
        save_checkpoint(engine, cfg, 1, 0, policy)
    assert not os.path.exists(cfg.run_dir)


def test_a_leftover_folder_of_the_same_step_is_replaced(tmp_path, policy, base_cfg):
    """A crashed save (no COMPLETE) or a demoted damaged checkpoint of the step being saved: its stale files
    (here a ZeRO shard of another world size) must not end up in the new manifest."""
    cfg = config(base_cfg, tmp_path / "run")
    stale = os.path.join(cfg.run_dir, "checkpoints", "step_1", "trainer_state", "deepspeed")
    os.makedirs(stale)
    open(os.path.join(stale, "zero_pp_rank_7_mp_rank_00_optim_states.pt"), "w").close()
    path = save_checkpoint(engine_for(cfg, policy), cfg, 1, 0, policy)
    assert not os.path.exists(os.path.join(stale, "zero_pp_rank_7_mp_rank_00_optim_states.pt"))
    assert verify(path, 1, checksums=True) is None


def test_pruning_keeps_the_newest_intact_checkpoints(tmp_path, policy, base_cfg):
    cfg = config(base_cfg, tmp_path, keep_checkpoints=1)
    paths = {step: write_checkpoint(tmp_path, step, policy, checksums=False) for step in (10, 20, 30, 40)}
    for step in (20, 40):
        truncate_weights(paths[step])
    assert checkpoints_to_remove(cfg) == [paths[10], paths[20]]  # 30 is the newest intact: kept
    cfg.trainer = dataclasses.replace(cfg.trainer, keep_checkpoints=2)
    assert checkpoints_to_remove(cfg) == []  # 10 and 30 are the two newest intact
    truncate_weights(paths[30])
    truncate_weights(paths[10])
    assert checkpoints_to_remove(cfg) == []  # none intact: nothing is deleted


def test_saving_prunes_to_keep_checkpoints(tmp_path, policy, base_cfg):
    cfg = config(base_cfg, tmp_path / "run", keep_checkpoints=2)
    os.makedirs(cfg.run_dir)
    engine = engine_for(cfg, policy)
    for step in (1, 2, 3):
        save_checkpoint(engine, cfg, step, 0, policy)
    assert [step for step, _ in list_checkpoints(cfg.run_dir)] == [2, 3]
    assert sorted(os.listdir(os.path.join(cfg.run_dir, "checkpoints"))) == ["step_2", "step_3"]


def test_every_file_and_folder_is_fsynced_before_complete(tmp_path, policy, base_cfg, monkeypatch):
    """Observed at the system call: every os.fsync is recorded (by path, from /proc/self/fd) and performed."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cfg = config(base_cfg, tmp_path / "run")
    os.makedirs(cfg.run_dir)
    path = save_checkpoint(engine_for(cfg, policy), cfg, 1, 0, policy)
    monkeypatch.undo()
    complete_at = max(i for i, p in enumerate(synced) if os.path.basename(p).startswith(COMPLETE + ".tmp"))
    manifest_at = max(i for i, p in enumerate(synced) if os.path.basename(p).startswith(MANIFEST + ".tmp"))
    before = set(synced[:manifest_at])
    files = json.loads(open(os.path.join(path, MANIFEST)).read())["files"]
    assert {os.path.join(path, rel) for rel in files} <= before  # every file, before the manifest is written
    folders = {folder for folder, _, _ in os.walk(path)}
    assert folders <= before  # and every folder (the files' names)
    assert manifest_at < complete_at
    after = synced[complete_at + 1:]
    assert path in after and os.path.dirname(path) in after  # COMPLETE's name, and step_1's own
