"""The run directory: metrics (JSONL + TensorBoard + console progress), checkpoints, summary.

Layout::

    <run_dir>/metrics.jsonl          one JSON object per step
    <run_dir>/tensorboard/           TensorBoard event files
    <run_dir>/checkpoints/step_N/    see actors.checkpoint and core.checkpoint_files
    <run_dir>/heldout_before.json    held-out accuracy of the initial policy (kept across resumes)
    <run_dir>/summary.json           written at the end of the run

Resume (:func:`resume_point`) starts from the newest checkpoint that passes
``core.checkpoint_files.verify``; newer damaged ones are reported (path and what is wrong) and demoted.
``metrics.jsonl`` is read line by line: a torn last line (power loss, disk full) is dropped with a
warning, any other unparseable line is a :class:`RunDirError` naming file and line; a resume whose
``metrics.jsonl`` lacks a step up to the checkpoint is refused (:func:`require_metrics_through`). A run directory
deleted while the run writes to it is an error naming it: it is never silently recreated.
"""
from __future__ import annotations

import json
import os
import re
import sys

from core.checkpoint_files import COMPLETE, demote, verify
from core.durable import fsync_file, reason, write_durably

METRICS = "metrics.jsonl"


class RunDirError(RuntimeError):
    """A problem with the run directory or what is in it; the message names the path and what is wrong."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def checkpoint_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"step_{step}")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """Committed checkpoints (``COMPLETE`` written) as (step, path), oldest first; not verified."""
    root = os.path.join(run_dir, "checkpoints")
    found = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        match = re.fullmatch(r"step_(\d+)", name)
        path = os.path.join(root, name)
        if match and os.path.exists(os.path.join(path, COMPLETE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str) -> tuple[int, str] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resume_point(run_dir: str, checksums: bool, log=_stderr) -> tuple[int, str] | None:
    """(step, path) of the newest intact checkpoint, or None when the run has no committed checkpoint.

    Each newer committed checkpoint that fails ``verify`` is reported through ``log`` (one ``WARNING`` line:
    its path and what is wrong) and, once an intact one is found, demoted (``COMPLETE`` -> ``DAMAGED``).
    Committed checkpoints but none intact: :class:`RunDirError` (starting over from the initial policy
    would overwrite this run's metrics and checkpoints; that is the user's call, not the job's)."""
    found = list_checkpoints(run_dir)
    damaged = []
    for step, path in reversed(found):
        problem = verify(path, step, checksums)
        if problem is None:
            for bad_path, bad_problem in damaged:
                demote(bad_path, bad_problem)
            return step, path
        log(f"WARNING: checkpoint {path} is damaged: {problem}; falling back to the previous checkpoint")
        damaged.append((path, problem))
    if damaged:
        root = os.path.join(run_dir, "checkpoints")
        raise RunDirError(f"{root}: none of the {len(damaged)} complete checkpoints is intact (see the warnings "
                          f"above): nothing to resume from; move {root} aside (or use another run_dir) to start "
                          "from the initial policy")
    return None


def start_point(run_dir: str, initial_path: str, checksums: bool = False, log=_stderr) -> tuple[int, str]:
    """(step, path) a run continues from: :func:`resume_point`, else (0, the initial policy).

    Read afresh whenever something (re)starts: the driver (with the configured checksums), every Ray Train
    worker-group start (also after a worker failure) and the stream built for it (sizes and headers: the
    checkpoints this run wrote since the driver checked), so all of them agree on where the run is."""
    return resume_point(run_dir, checksums, log) or (0, initial_path)


# ---- metrics.jsonl ----------------------------------------------------------------------------------------

def _metric_lines(path: str, data: bytes, log) -> list[tuple[bytes, dict]]:
    """(raw line, parsed row) of every line of ``data`` (the content of ``path``); a torn last line is
    dropped with a warning, any other line that is not a JSON object with a ``step`` raises
    :class:`RunDirError`."""
    numbered = [(i + 1, line) for i, line in enumerate(data.split(b"\n")) if line.strip()]
    rows = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a JSON object with an integer 'step'")
        except (ValueError, UnicodeDecodeError) as err:
            if k == len(numbered) - 1:
                log(f"WARNING: {path}: line {lineno} is torn ({len(line)} bytes, not a complete JSON object: "
                    "an interrupted write); dropped")
                break
            raise RunDirError(f"{path}: line {lineno} is not a JSON object with a step ({err}); only a torn last "
                              "line is dropped automatically: repair or remove that line") from None
        rows.append((line, row))
    return rows


def truncate_metrics(run_dir: str, last_step: int, log=_stderr) -> None:
    """Drop metric lines past ``last_step`` (steps a crashed run logged but did not checkpoint) and a torn
    last line; the file is replaced atomically (a crash here keeps the old one)."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        data = f.read()
    kept = b"".join(line + b"\n" for line, row in _metric_lines(path, data, log) if row["step"] <= last_step)
    if kept != data:
        write_durably(path, kept)


def require_metrics_through(run_dir: str, last_step: int, log=_stderr) -> None:
    """Raise :class:`RunDirError` unless ``metrics.jsonl`` holds steps 1..``last_step`` exactly once each, in
    order (call after :func:`truncate_metrics`): a run resuming from ``last_step``'s checkpoint must not leave a
    step without its record (a lost line cannot be recomputed). The message names the file, the steps missing
    or repeated, and how to go on."""
    path = os.path.join(run_dir, METRICS)
    steps = [row["step"] for row in read_metrics(run_dir, log)]
    if steps == list(range(1, last_step + 1)):
        return
    missing = sorted(set(range(1, last_step + 1)) - set(steps))
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    what = []
    if missing:
        what.append(f"no line for step{'s' if len(missing) > 1 else ''} {_ranges(missing)}")
    if repeated:
        what.append(f"step{'s' if len(repeated) > 1 else ''} {_ranges(repeated)} more than once")
    if not what:
        what.append("steps out of order")
    first_bad = min(missing + repeated) if missing or repeated else 1
    raise RunDirError(f"{path} has {' and '.join(what)}, but the run resumes from the checkpoint of step {last_step}: "
                      f"that record is lost; move the checkpoints after step {first_bad - 1} aside to redo the steps "
                      f"from there (or use another run_dir)")


def _ranges(steps: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"`` (at most 5 ranges shown)."""
    spans: list[list[int]] = []
    for s in steps:
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in spans[:5]]
    return ", ".join(text) + (f" and {len(spans) - 5} more ranges" if len(spans) > 5 else "")


def read_metrics(run_dir: str, log=_stderr) -> list[dict]:
    """Every step's metrics of ``run_dir`` (a torn last line dropped with a warning); an archived run (a study's
    committed data: ``metrics.jsonl.gz``, see ``pipeline.study_archive``) is read from its gzip copy."""
    import gzip

    path = os.path.join(run_dir, METRICS)
    for name, opener in ((path, open), (path + ".gz", gzip.open)):
        if os.path.exists(name):
            with opener(name, "rb") as f:
                return [row for _, row in _metric_lines(name, f.read(), log)]
    return []


def ensure_dir(path: str, key: str) -> str:
    """Create directory ``path`` (and its parents) if missing; returns it. One that cannot be created (a parent
    that is a file or missing under a read-only/virtual tree, no permission, a full disk) is a
    :class:`~core.typed.ConfigError` naming the config ``key`` that gave the path, the path and the cause."""
    from core.typed import ConfigError

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ConfigError(key, f"cannot create {path}: {reason(err)}"
                               f"{f' ({err.filename})' if err.filename and err.filename != path else ''}") from None
    return path


def require_run_dir(run_dir: str, writing: str) -> None:
    """Raise :class:`RunDirError` unless ``run_dir`` still exists (``writing``: what was about to be written)."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"run_dir {run_dir} no longer exists (deleted, moved or unmounted while the run was "
                          f"using it): cannot write {writing}; the run stops rather than recreate it empty")


class MetricsLogger:
    """Appends step metrics to metrics.jsonl and TensorBoard; shows a progress bar per step.

    Each line is flushed; at checkpoint steps (``log(..., sync=True)``) also fsynced, so the metrics of a
    checkpointed step survive power loss. A write failure (disk full) or a run directory deleted mid-run
    raises :class:`RunDirError` naming the path."""

    def __init__(self, run_dir: str, start_step: int, total_steps: int):
        from ray.experimental.tqdm_ray import tqdm
        from torch.utils.tensorboard import SummaryWriter

        require_run_dir(run_dir, METRICS)
        self.run_dir, self.path = run_dir, os.path.join(run_dir, METRICS)
        self.file = open(self.path, "a")
        self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=start_step + 1)
        self.bar = tqdm(total=total_steps, desc="RL steps")
        self.bar.update(start_step)

    def log(self, step: int, metrics: dict, sync: bool = False) -> None:
        require_run_dir(self.run_dir, f"{self.path} (step {step})")
        if os.fstat(self.file.fileno()).st_nlink == 0:
            raise RunDirError(f"{self.path} was deleted while the run was appending to it (step {step})")
        try:
            self.file.write(json.dumps({"step": step, **metrics}) + "\n")
            self.file.flush()
            if sync:
                fsync_file(self.path)
        except OSError as err:
            raise RunDirError(f"cannot append step {step} to {self.path}: {reason(err)} ({err})") from err
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        self.bar.set_description(
            f"step {step} reward {metrics['reward/mean']:.3f} step_s {metrics['timing/step_s']:.1f}")
        self.bar.update(1)

    def close(self) -> None:
        self.tb.close()
        self.file.close()
        self.bar.close()


def make_logger_factory(run_dir: str, total_steps: int):
    """A picklable factory ``f(start_step)`` (the logger itself is created inside the train worker)."""
    return lambda start_step: MetricsLogger(run_dir, start_step, total_steps)
