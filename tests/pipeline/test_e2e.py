"""The whole loop, for real: Ray Data -> vLLM actors -> verifier -> Ray Train + DeepSpeed -> checkpoints.

Shortened configurations of the default job (same code path, fewer steps). They share the warm start
cached under ``EAPO_CACHE_DIR`` (CI points it at a new empty directory, so the first job builds it).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

REQUIRED_KEYS = ["step", "reward/mean", "response_length/mean", "entropy/mean", "loss", "grad_norm", "clip_fraction",
                 "timing/rollout_s", "timing/reward_s", "timing/train_s", "timing/weight_sync_s", "timing/step_s"] + [
    f"quadrant/{q}/token_share" for q in ("PHR", "PLR", "NLR", "NHR")]


def run_job_with_output(run_dir: Path, *overrides: str, timeout: int = 1200) -> tuple[dict, str]:
    """(summary.json, the console: stdout and stderr) of ``python -m pipeline.run run_dir=<run_dir> <overrides>``."""
    cmd = [sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"job failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return json.loads((run_dir / "summary.json").read_text()), proc.stdout + proc.stderr


def run_job(run_dir: Path, *overrides: str, timeout: int = 1200) -> dict:
    return run_job_with_output(run_dir, *overrides, timeout=timeout)[0]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def mean(values):
    return sum(values) / len(values)


def test_loop_learns(tmp_path):
    """The default job learns (resume is checked by the two-worker job below, by every fault test's restart and,
    outside CI's budget, by the killed-driver test's rerun)."""
    run_dir = tmp_path / "run"
    # heldout.sample_k=0: pass@k is the study test's to check; here it would only add sampling time
    first = run_job(run_dir, "trainer.total_steps=30", "trainer.save_every=15", "heldout.size=200",
                    "heldout.sample_k=0")
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 31))
    for key in REQUIRED_KEYS:
        assert all(key in r for r in rows), key
    # quadrant shares are over the A != 0 tokens: they sum to 1 unless every group had equal rewards
    for r in rows:
        total = sum(r[f"quadrant/{q}/token_share"] for q in ("PHR", "PLR", "NLR", "NHR"))
        assert abs(total - (0.0 if r["quadrant/zero/token_share"] == 1.0 else 1.0)) < 1e-6
    # held-out greedy accuracy measured by the rollout engine every heldout.every=10 steps
    assert [r["heldout/weight_version"] for r in rows if "heldout/accuracy" in r] == [0, 10, 20]
    # learning happens (margins hold on seeds 0-4 of the default job, measured from fresh caches: held-out
    # gain after 30 updates +27..+60 points, training reward of steps 21-30 above steps 1-10 by +0.04..+0.17)
    assert first["heldout_accuracy_after"] >= first["heldout_accuracy_before"] + 0.15
    # every step trained on something (dynamic sampling keeps informative groups): a data point, not a failed run
    assert first["no_signal_steps"] == 0 and all(r["train/tokens_trained"] > 0 for r in rows)
    assert mean([r["reward/mean"] for r in rows[-10:]]) > mean([r["reward/mean"] for r in rows[:10]])
    # on-policy: the rollout engine's log-probs match the trainer's, so the weights did reach vLLM
    assert max(r["rollout/logprob_gap"] for r in rows) < 1e-2
    assert first["steps"] == 30 and first["heldout_size"] == 200
    assert {"heldout_accuracy_before", "heldout_accuracy_after", "wall_s"} <= set(first)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "training_curves.png").stat().st_size > 10_000
    ckpt = run_dir / "checkpoints" / "step_30"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "tokenizer.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(ckpt), AutoTokenizer.from_pretrained(ckpt)


def test_file_data_with_a_heldout_file_and_steps_that_train_on_nothing(tmp_path):
    """data.source=files with heldout.path: the held-out accuracy is measured on the file's problems.

    With responses cut at rollout.max_tokens=4 every answer is wrong, dynamic sampling finds no group with signal
    in its 3 extra rounds and no token carries credit: the console says so at step 1, with the cause, summary.json
    counts the steps, and no optimizer step is taken (the final weights are the initial ones: same accuracy)."""
    from task.synthetic import sample_problems, write_parquet

    train, held = tmp_path / "train.parquet", tmp_path / "heldout.parquet"
    write_parquet(sample_problems(64, 1, 2, "train"), str(train))
    write_parquet(sample_problems(8, 2, 2, "heldout"), str(held))
    run_dir = tmp_path / "files"
    summary, console = run_job_with_output(
        run_dir, "data=math_train", f"data.path={train}", f"heldout.path={held}", "data.max_prompt_tokens=128",
        "heldout.size=8", "trainer.total_steps=2", "trainer.save_every=2", "rollout.max_tokens=4")
    assert summary["heldout_size"] == 8 and summary["steps"] == 2
    assert 0.0 <= summary["heldout_accuracy_before"] <= 1.0
    assert "WARNING: step 1 trained on nothing" in console, console[-4000:]
    assert "100% of responses reached rollout.max_tokens=4" in console
    rows = metrics(run_dir)
    assert summary["no_signal_steps"] == 2 and [r["train/no_signal"] for r in rows] == [1.0, 1.0]
    assert all(r["dynamic_sampling/unfilled_share"] == 1.0 and r["train/tokens_trained"] == 0 for r in rows)
    assert summary["heldout_accuracy_after"] == summary["heldout_accuracy_before"]  # the initial weights


def test_two_workers_with_zero3_and_two_engines_stay_on_policy_and_resume(tmp_path):
    """trainer.num_workers=2 with ZeRO-3 and rollout.num_actors=2: every step whole (2 shards, one per worker),
    the gathered weights reach both engines, and a resumed run continues each at its data position.

    With rollout.staleness=1 (in this job, one job start fewer): step 1 samples with the initial weights, later
    steps with weights one update old, never older; the behaviour policy then differs from the trainer's by one
    update, far above step 1's numerical gap (~1e-7) and still small (< 1e-2: the weights did reach the engines)."""
    run_dir = tmp_path / "dp"
    scale = ["trainer.num_workers=2", "trainer.cpus_per_worker=0.5", "trainer.zero_stage=3",
             "trainer.grad_check_every=0", "rollout.num_actors=2", "rollout.cpus_per_actor=0.4", "trainer.save_every=2", "heldout.size=16",
             "heldout.every=0", "heldout.sample_k=0", "rollout.staleness=1"]
    first = run_job(run_dir, *scale, "trainer.total_steps=4")
    rows = metrics(run_dir)
    assert rows[0]["rollout/weight_version_lag"] == 0
    assert all(r["rollout/weight_version_lag"] == 1 for r in rows[1:4])
    # one update at lr 1e-5 moves log-probs by ~1e-3 (9.6e-4 to 3e-3 measured on one worker)
    assert max(r["rollout/logprob_gap"] for r in rows[1:4]) > max(1e-4, 50 * rows[0]["rollout/logprob_gap"])
    second = run_job(run_dir, *scale, "trainer.total_steps=6")
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 7)) and first["steps"] == 4 and second["steps"] == 6
    # 2 shards per step (rank 0 logs the one it trained on): step s gets shards 2(s-1) and 2(s-1)+1
    assert [int(r["data/first_shard"]) // 2 for r in rows] == list(range(6))
    assert max(r["rollout/logprob_gap"] for r in rows) < 1e-2
    assert (run_dir / "checkpoints" / "step_6" / "COMPLETE").exists()


def test_the_credit_check_gate_measures_the_initial_policy(tmp_path):
    """python -m pipeline.credit_check on the default warm start: DAPO's credit is the plain advantage (cos 1: the
    gate fails, exit 1); eapo_strong's turns and rescales the gradient (cos < 1, norm ratio > 1; exit 0 under a gate
    of 1.0). One JSON line each, written to credit_check.out too."""
    results = {}
    for algo, gate in (("dapo", 0.95), ("eapo_strong", 1.0)):
        out = tmp_path / f"{algo}.json"
        proc = subprocess.run([sys.executable, "-m", "pipeline.credit_check", f"algorithm={algo}",
                               "credit_check.prompts=8", f"credit_check.max_cosine={gate}", f"credit_check.out={out}"],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        results[algo] = (proc.returncode, json.loads(out.read_text()), proc.stderr)
    rc, dapo, err = results["dapo"]
    assert rc == 1 and dapo["pass"] is False and dapo["grad/cos_shaped_plain"] == pytest.approx(1.0, abs=1e-9), err
    assert "[credit check] FAIL" in err and dapo["samples"] == 8 * 8
    rc, strong, err = results["eapo_strong"]
    assert rc == 0 and strong["pass"] is True, err[-3000:]
    assert strong["grad/cos_shaped_plain"] < 1 - 1e-6 and strong["grad/norm_ratio_shaped_plain"] > 1.2
    assert strong["weight_min"] >= 0.1 - 1e-6 and strong["weight_max"] <= 1.9 + 1e-6
    assert sum(strong[f"quadrant/{q}/grad_share"] for q in ("PHR", "PLR", "NLR", "NHR")) == pytest.approx(1.0)
