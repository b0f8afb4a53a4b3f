"""The run directory: metrics (JSONL + TensorBoard + console progress), checkpoints, summary.

Layout::

    <run_dir>/metrics.jsonl          one JSON object per step
    <run_dir>/tensorboard/           TensorBoard event files
    <run_dir>/checkpoints/step_N/    see actors.checkpoint
    <run_dir>/heldout_before.json    held-out accuracy of the initial policy (kept across resumes)
    <run_dir>/summary.json           written at the end of the run
"""
from __future__ import annotations

import json
import os
import re


def checkpoint_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"step_{step}")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints as (step, path), oldest first."""
    root = os.path.join(run_dir, "checkpoints")
    found = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        match = re.fullmatch(r"step_(\d+)", name)
        path = os.path.join(root, name)
        if match and os.path.exists(os.path.join(path, "COMPLETE")):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str) -> tuple[int, str] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resume_point(run_dir: str, initial_path: str) -> tuple[int, str]:
    """(step, checkpoint path) a run continues from: its latest complete checkpoint, else (0, the initial policy).

    Read afresh whenever something (re)starts: the driver, every Ray Train worker-group start (also after a
    worker failure) and the stream built for it, so all of them agree on where the run is."""
    return latest_checkpoint(run_dir) or (0, initial_path)


def truncate_metrics(run_dir: str, last_step: int) -> None:
    """Drop metric lines past ``last_step`` (steps a crashed run logged but did not checkpoint)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(keep)


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLogger:
    """Appends step metrics to metrics.jsonl and TensorBoard; shows a progress bar per step."""

    def __init__(self, run_dir: str, start_step: int, total_steps: int):
        from ray.experimental.tqdm_ray import tqdm
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(run_dir, exist_ok=True)
        self.file = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=start_step + 1)
        self.bar = tqdm(total=total_steps, desc="RL steps")
        self.bar.update(start_step)

    def log(self, step: int, metrics: dict) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
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
