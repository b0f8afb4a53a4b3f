"""Checkpoint commit and verification on real files: a committed checkpoint verifies; each kind of damage
(truncated weights, a missing DeepSpeed file, garbage state.json, a flipped byte, a torn torch archive, a
garbage, empty or missing manifest, a file it does not list) is named with the file at fault; behind a matching
manifest the structure is still checked."""
from __future__ import annotations

import json
import os

import pytest

from core.checkpoint_files import (COMPLETE, DAMAGED, MANIFEST, build_manifest, demote, discard,
                                   safetensors_problem, verify)
from core.durable import fsync_tree, reason, write_durably
from tests.checkpoint_layout import write_checkpoint


@pytest.fixture
def ckpt(tmp_path, source):
    return write_checkpoint(tmp_path / "run", 4, source)


def truncate(path: str, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_a_committed_checkpoint_is_intact_and_its_manifest_lists_every_file(ckpt):
    assert verify(ckpt, 4, checksums=True) is None
    manifest = json.loads(open(os.path.join(ckpt, MANIFEST)).read())
    on_disk = {os.path.relpath(os.path.join(d, n), ckpt) for d, _, names in os.walk(ckpt) for n in names}
    assert set(manifest["files"]) == on_disk - {MANIFEST, COMPLETE}
    assert {"model.safetensors", "config.json", "tokenizer.json", "state.json", "rng/rank0.pt",
            "trainer_state/latest", "trainer_state/deepspeed/mp_rank_00_model_states.pt"} <= set(manifest["files"])
    entry = manifest["files"]["model.safetensors"]
    assert entry["size"] == os.path.getsize(os.path.join(ckpt, "model.safetensors")) and len(entry["sha256"]) == 64
    assert os.path.getsize(os.path.join(ckpt, COMPLETE)) == 0


def test_truncated_weights_are_named(ckpt):
    weights = os.path.join(ckpt, "model.safetensors")
    truncate(weights, os.path.getsize(weights) // 2)
    problem = verify(ckpt, 4, checksums=False)
    assert "model.safetensors" in problem and "truncated" in problem, problem


def test_a_missing_deepspeed_file_is_named(ckpt):
    os.unlink(os.path.join(ckpt, "trainer_state", "deepspeed", "mp_rank_00_model_states.pt"))
    problem = verify(ckpt, 4, checksums=False)
    assert problem == "trainer_state/deepspeed/mp_rank_00_model_states.pt is missing", problem


def test_garbage_state_json_is_named(ckpt):
    with open(os.path.join(ckpt, "state.json"), "w") as f:  # same size as the original: only the content tells
        f.write("x" * len(json.dumps({"step": 4, "algorithm": "eapo"})))
    problem = verify(ckpt, 4, checksums=False)
    assert problem.startswith("state.json is not valid JSON"), problem


def test_a_flipped_byte_is_caught_by_the_checksum_only(ckpt):
    flip_byte(os.path.join(ckpt, "model.safetensors"))
    assert verify(ckpt, 4, checksums=False) is None  # same size, header fine
    assert verify(ckpt, 4, checksums=True) == "model.safetensors does not match its sha256 in the manifest (corrupted)"


def test_a_garbage_manifest_is_named(ckpt):
    with open(os.path.join(ckpt, MANIFEST), "w") as f:
        f.write('{"format": 1, "files": {"model.safe')
    assert verify(ckpt, 4, checksums=False).startswith("manifest.json is not valid JSON")


def flip_byte(path: str, from_end: int = 10) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - from_end)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("checksums", [False, True])
def test_a_missing_manifest_is_damage(ckpt, checksums):
    """Without the manifest nothing tells a changed file from the committed one: the checkpoint is damaged."""
    os.unlink(os.path.join(ckpt, MANIFEST))
    problem = verify(ckpt, 4, checksums=checksums)
    assert problem is not None and problem.startswith("manifest.json is missing"), problem


@pytest.mark.parametrize("content, expected", [
    ("", "manifest.json is not valid JSON"),
    ("[]", "manifest.json is not a manifest of step 4"),
    ('{"format": 1, "step": 5, "files": {"state.json": {"size": 1}}}', "manifest.json is not a manifest of step 4"),
    ('{"format": 1, "step": 4, "files": {}}', "manifest.json lists no files"),
    ('{"format": 1, "step": 4, "files": {"state.json": {}}}', "manifest.json has no size for state.json"),
])
def test_an_empty_or_invalid_manifest_is_damage(ckpt, content, expected):
    with open(os.path.join(ckpt, MANIFEST), "w") as f:
        f.write(content)
    problem = verify(ckpt, 4, checksums=False)
    assert problem is not None and problem.startswith(expected), problem


def test_a_deleted_tokenizer_is_named(ckpt):
    os.unlink(os.path.join(ckpt, "tokenizer.json"))
    assert verify(ckpt, 4, checksums=False) == "tokenizer.json is missing"


def test_a_flipped_optimizer_byte_is_named_with_checksums(ckpt):
    flip_byte(os.path.join(ckpt, "trainer_state", "deepspeed", "mp_rank_00_model_states.pt"), from_end=200)
    assert verify(ckpt, 4, checksums=True) == ("trainer_state/deepspeed/mp_rank_00_model_states.pt does not match "
                                               "its sha256 in the manifest (corrupted)")


def test_a_file_the_manifest_does_not_list_is_damage(ckpt):
    with open(os.path.join(ckpt, "trainer_state", "deepspeed", "zero_pp_rank_1_mp_rank_00_optim_states.pt"), "wb") as f:
        f.write(b"foreign")
    problem = verify(ckpt, 4, checksums=False)
    assert problem == ("trainer_state/deepspeed/zero_pp_rank_1_mp_rank_00_optim_states.pt is not listed in "
                       "manifest.json (added after the commit)"), problem


def test_the_structure_is_checked_behind_a_matching_manifest(ckpt):
    """Files written damaged before the commit (the manifest matches them): the structure still tells."""
    rng = os.path.join(ckpt, "rng", "rank0.pt")
    truncate(rng, os.path.getsize(rng) - 30)
    weights = os.path.join(ckpt, "model.safetensors")
    truncate(weights, os.path.getsize(weights) - 1)
    write_durably(os.path.join(ckpt, MANIFEST), json.dumps(build_manifest(ckpt, 4, checksums=True)).encode())
    problem = verify(ckpt, 4, checksums=True)
    assert "model.safetensors has" in problem and "rng/rank0.pt is not a complete torch.save archive" in problem
    with open(os.path.join(ckpt, "state.json"), "w") as f:
        json.dump({"step": 5, "algorithm": "eapo"}, f)
    write_durably(os.path.join(ckpt, MANIFEST), json.dumps(build_manifest(ckpt, 4, checksums=True)).encode())
    assert "state.json does not say step 4" in verify(ckpt, 4, checksums=False)


def test_a_checkpoint_holding_only_complete_is_damaged(tmp_path):
    path = tmp_path / "step_3"
    path.mkdir()
    (path / COMPLETE).touch()
    problem = verify(str(path), 3, checksums=False)
    assert "state.json is missing" in problem and "more" in problem  # several problems, the first few shown


def test_safetensors_header_checks(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x05")
    assert "no safetensors header" in safetensors_problem(str(bad))
    bad.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    assert "less than its header length" in safetensors_problem(str(bad))
    bad.write_bytes((4).to_bytes(8, "little") + b"{{{{")
    assert "header is unreadable" in safetensors_problem(str(bad))
    assert safetensors_problem(str(tmp_path / "none.safetensors")) == "none.safetensors is missing"


def test_manifest_without_checksums_has_sizes_only(ckpt):
    manifest = build_manifest(ckpt, 4, checksums=False)
    assert all(entry["sha256"] is None and entry["size"] >= 0 for entry in manifest["files"].values())


def test_demote_keeps_the_files_and_says_why(ckpt):
    demote(ckpt, "model.safetensors has 3 bytes")
    assert not os.path.exists(os.path.join(ckpt, COMPLETE))
    assert open(os.path.join(ckpt, DAMAGED)).read().strip() == "model.safetensors has 3 bytes"
    assert os.path.exists(os.path.join(ckpt, "model.safetensors"))


def test_discard_removes_the_folder(ckpt):
    discard(ckpt)
    assert not os.path.exists(ckpt)
    discard(ckpt)  # nothing left: no error


def test_write_durably_replaces_atomically(tmp_path):
    target = tmp_path / "state.json"
    write_durably(str(target), b"old")
    write_durably(str(target), b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.json"]
    fsync_tree(str(tmp_path))


def test_reason_names_the_cause():
    import errno

    assert reason(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert reason(OSError("plain")) == "plain"
