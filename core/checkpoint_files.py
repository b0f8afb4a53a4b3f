"""The files of one checkpoint folder: how it is committed, and whether it can be trusted.

A checkpoint ``step_N/`` is *committed* (:func:`commit`) once every file of it is written: every file and
folder is fsynced, ``manifest.json`` lists every file with its size (and sha256 when checksums are on) and
is written durably, then ``COMPLETE`` is written durably. A crash at any point before leaves no
``COMPLETE``, so resume never picks the folder up.

:func:`verify` says what is wrong with a committed checkpoint, without loading it (no torch, DeepSpeed or
Ray): every manifest file present with its size (and checksum), ``state.json`` a JSON object with the
folder's step, ``config.json`` JSON, each ``*.safetensors`` file's header readable and describing exactly
the file's size, each ``*.pt`` file (DeepSpeed states, RNG) a complete zip archive (``torch.save``'s
format), DeepSpeed's ``trainer_state/latest`` naming a tag folder that exists. The manifest is required:
a committed checkpoint whose manifest is missing, empty or not valid, that lacks a listed file or holds a
file the manifest does not list is damaged (nothing could tell its files from changed or foreign ones).

A checkpoint found damaged at resume is *demoted* (:func:`demote`): ``COMPLETE`` becomes ``DAMAGED``
(holding what is wrong), so nothing (resume, ``serve follow=``, pruning) takes it for a complete one again;
its files stay for inspection until the run writes that step anew.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile

from core.durable import fsync_dir, fsync_tree, write_durably

COMPLETE = "COMPLETE"
DAMAGED = "DAMAGED"
MANIFEST = "manifest.json"
STATE = "state.json"
TRAINER_STATE = "trainer_state"  # DeepSpeed's save_checkpoint folder
MANIFEST_FORMAT = 1
_NOT_LISTED = {MANIFEST, COMPLETE, DAMAGED}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
_PROBLEMS_SHOWN = 3


def sha256_of(path: str, chunk: int = 8 << 20) -> str:
    """Hex sha256 of the file at ``path`` (read in 8 MiB chunks; ~1 GB/s on one core)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(path: str, step: int, checksums: bool) -> dict:
    """Every file under the checkpoint folder ``path`` (relative path -> size in bytes and sha256, or None
    without ``checksums``), but the manifest and the markers themselves."""
    files = {}
    for rel in _listed_files(path):
        full = os.path.join(path, rel)
        files[rel] = {"size": os.path.getsize(full), "sha256": sha256_of(full) if checksums else None}
    return {"format": MANIFEST_FORMAT, "step": step, "files": dict(sorted(files.items()))}


def commit(path: str, step: int, checksums: bool) -> dict:
    """Make the fully written checkpoint ``path`` durable and complete: fsync every file and folder, write
    ``manifest.json`` then ``COMPLETE`` (each atomically, fsynced), fsync the parent folder. Returns the
    manifest. Raises ``OSError`` (the caller names the checkpoint)."""
    fsync_tree(path)
    manifest = build_manifest(path, step, checksums)
    write_durably(os.path.join(path, MANIFEST), json.dumps(manifest, indent=1).encode())
    write_durably(os.path.join(path, COMPLETE), b"")
    fsync_dir(os.path.dirname(path))
    return manifest


def discard(path: str) -> None:
    """Remove a checkpoint folder, ``COMPLETE`` first (durably), so a crash mid-removal never leaves a
    half-deleted folder that looks complete. Missing folder: nothing to do."""
    if not os.path.isdir(path):
        return
    for marker in (COMPLETE, MANIFEST):
        if os.path.exists(os.path.join(path, marker)):
            os.unlink(os.path.join(path, marker))
    fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


def demote(path: str, problem: str) -> None:
    """Turn the committed but damaged checkpoint ``path`` into an incomplete one: ``DAMAGED`` (holding
    ``problem``) is written, then ``COMPLETE`` removed; the files are kept for inspection."""
    write_durably(os.path.join(path, DAMAGED), (problem + "\n").encode())
    try:  # the driver, the stream and every worker may find the same damage at a restart
        os.unlink(os.path.join(path, COMPLETE))
    except FileNotFoundError:
        pass
    fsync_dir(path)


def verify(path: str, step: int, checksums: bool) -> str | None:
    """What is wrong with the committed checkpoint ``path`` of ``step`` (one line, the first few problems),
    or None when it is intact. ``checksums``: also re-hash every file listed with a sha256 in the manifest
    (reads the whole checkpoint); without, sizes and headers only (milliseconds)."""
    problems = _manifest_problems(path, step, checksums)
    if not problems or not _manifest_usable(problems):  # without a manifest, say what else is wrong
        problems += _structure_problems(path, step)
    if not problems:
        return None
    more = len(problems) - _PROBLEMS_SHOWN
    return "; ".join(problems[:_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _read_json(path: str, name: str) -> tuple[object, str | None]:
    full = os.path.join(path, name)
    if not os.path.exists(full):
        return None, f"{name} is missing"
    try:
        with open(full, "rb") as f:
            return json.loads(f.read()), None
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{name} is not valid JSON ({err})"


def _manifest_usable(problems: list[str]) -> bool:
    """Whether ``problems`` are about the files (the manifest itself could be read)."""
    return not problems[0].startswith(MANIFEST)


def _listed_files(path: str) -> set[str]:
    """Every file under ``path`` that a manifest lists (all but the manifest and the markers)."""
    found = set()
    for folder, _, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), path)
            if rel not in _NOT_LISTED:
                found.add(rel)
    return found


def _manifest_problems(path: str, step: int, checksums: bool) -> list[str]:
    """Problems against ``manifest.json``, which a committed checkpoint must have: missing, empty or not a
    manifest of ``step``; a listed file missing or changed; a file on disk that it does not list."""
    if not os.path.exists(os.path.join(path, MANIFEST)):
        return [f"{MANIFEST} is missing (a committed checkpoint lists every file in it): its files cannot be "
                "checked"]
    manifest, problem = _read_json(path, MANIFEST)
    if problem:
        return [problem]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("step") != step:
        return [f"{MANIFEST} is not a manifest of step {step}"]
    if not files:
        return [f"{MANIFEST} lists no files"]
    problems = []
    for rel, entry in files.items():
        full = os.path.join(path, rel)
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            problems.append(f"{MANIFEST} has no size for {rel}")
            continue
        if not os.path.isfile(full):
            problems.append(f"{rel} is missing")
            continue
        size = os.path.getsize(full)
        if size != entry["size"]:
            problems.append(f"{rel} has {size} bytes, the manifest says {entry['size']} "
                            f"({'truncated' if size < entry['size'] else 'changed'})")
        elif checksums and entry.get("sha256") and sha256_of(full) != entry["sha256"]:
            problems.append(f"{rel} does not match its sha256 in the manifest (corrupted)")
    problems += [f"{rel} is not listed in {MANIFEST} (added after the commit)"
                 for rel in sorted(_listed_files(path) - set(files))]
    return problems


def _structure_problems(path: str, step: int) -> list[str]:
    """Problems visible in the files themselves (state, config, weights, DeepSpeed and RNG states)."""
    problems = []
    state, problem = _read_json(path, STATE)
    if problem:
        problems.append(problem)
    elif not isinstance(state, dict) or state.get("step") != step:
        problems.append(f"{STATE} does not say step {step} (got {state!r:.80})")
    _, problem = _read_json(path, "config.json")
    if problem:
        problems.append(problem)
    problems += _weights_problems(path)
    problems += _trainer_state_problems(path)
    rng = os.path.join(path, "rng")
    if not os.path.isdir(rng) or not os.listdir(rng):
        problems.append("rng/ (the workers' random states) is missing")
    else:
        problems += [p for name in sorted(os.listdir(rng)) if (p := _torch_file_problem(path, f"rng/{name}"))]
    return problems


def _weights_problems(path: str) -> list[str]:
    index, problem = (None, None)
    if os.path.exists(os.path.join(path, "model.safetensors.index.json")):
        index, problem = _read_json(path, "model.safetensors.index.json")
        if problem:
            return [problem]
    if isinstance(index, dict):
        names = sorted(set(index.get("weight_map", {}).values()))
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    if not names:
        return ["no model weights (model.safetensors) in the checkpoint"]
    return [p for name in names if (p := safetensors_problem(os.path.join(path, name)))]


def safetensors_problem(file: str) -> str | None:
    """What is wrong with a ``.safetensors`` file (missing, header unreadable, size not the header's), or None."""
    name = os.path.basename(file)
    if not os.path.isfile(file):
        return f"{name} is missing"
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{name} has {size} bytes: no safetensors header (truncated)"
        length = int.from_bytes(head, "little")
        if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
            return f"{name} has {size} bytes, less than its header length {length} says (truncated or not safetensors)"
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError) as err:
            return f"{name}: the safetensors header is unreadable ({type(err).__name__}: {err})"
    if 8 + length + end != size:
        return f"{name} has {size} bytes, its header describes {8 + length + end} (truncated)"
    return None


def _trainer_state_problems(path: str) -> list[str]:
    """DeepSpeed's folder: ``latest`` names the tag folder, which holds complete ``*.pt`` states."""
    root = os.path.join(path, TRAINER_STATE)
    latest = os.path.join(root, "latest")
    if not os.path.isfile(latest):
        return [f"{TRAINER_STATE}/latest (DeepSpeed's optimizer and module states) is missing"]
    with open(latest, encoding="utf-8", errors="replace") as f:
        tag = f.read().strip()
    folder = os.path.join(root, tag)
    states = sorted(n for n in os.listdir(folder) if n.endswith(".pt")) if tag and os.path.isdir(folder) else []
    if not states:
        return [f"{TRAINER_STATE}/{tag or '<empty latest>'}/ holds no DeepSpeed state files"]
    return [p for name in states if (p := _torch_file_problem(path, f"{TRAINER_STATE}/{tag}/{name}"))]


def _torch_file_problem(path: str, rel: str) -> str | None:
    """A ``torch.save`` file is a zip archive: one cut short has no central directory at its end."""
    if not zipfile.is_zipfile(os.path.join(path, rel)):
        return f"{rel} is not a complete torch.save archive (truncated)"
    return None
