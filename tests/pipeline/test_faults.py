"""Faults injected on purpose into a real run (the default job, shortened): SIGKILL of a Ray Train worker,
of the vLLM rollout actor and of the weight store, while the run is training; deterministic kills of the train
worker at every point of a step (``EAPO_FAULTS``, ``core.faults``); SIGSTOP of a train worker (the hang
monitor, ``trainer.hang_timeout_s``) with no restarts left (one error line, exit code 3).

Each run must finish by itself with every step in ``metrics.jsonl`` exactly once, in order, each at its own
data position (``data/first_shard``), and report the time from the kill to the next completed step (printed:
``pytest -s`` shows it). The processes are found by the title Ray gives them (``ray::<actor class>``).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.reaper import alive, descendants
from tests.conftest import REPO

pytestmark = pytest.mark.slow

STEPS, KILL_AFTER = 8, 3
SHORT = [f"trainer.total_steps={STEPS}", "trainer.save_every=2", "heldout.size=0"]


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _pids(title: str, root: int) -> list[int]:
    """Processes of the job started as ``root`` whose title (Ray sets ``ray::<actor class>``) contains ``title``."""
    out = subprocess.run(["pgrep", "-f", title], capture_output=True, text=True).stdout.split()
    mine = descendants(root)
    return [int(pid) for pid in out if int(pid) in mine]


def run_and_kill(run_dir: Path, schedule: list[tuple[str, int]], *overrides: str,
                 timeout: float = 900) -> tuple[subprocess.Popen, str, list[float]]:
    """Start the job; for each (title, step) of ``schedule``, in order, SIGKILL the process titled ``title`` once
    ``step`` is logged; wait for the job. Returns (process, its output, per kill the seconds to the next step)."""
    log = run_dir.parent / "job.log"
    recovered: list[float] = []
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}", *SHORT, *overrides],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        for title, after in schedule:
            while max(_steps(run_dir), default=0) < after:
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.time() < deadline, f"the job never reached step {after} to kill {title} at"
                time.sleep(0.2)
            victims = _pids(title, proc.pid)
            assert victims, f"no process titled {title!r}"
            os.kill(victims[0], signal.SIGKILL)
            killed_at, seen = time.time(), len(_steps(run_dir))
            while proc.poll() is None and len(_steps(run_dir)) <= seen and time.time() < deadline:
                time.sleep(0.2)
            recovered.append(time.time() - killed_at if len(_steps(run_dir)) > seen else float("nan"))
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"the job hung after the kills {schedule}:\n{log.read_text()[-4000:]}")
    return proc, log.read_text(), recovered


def _assert_every_step_once(run_dir: Path, proc: subprocess.Popen, output: str) -> None:
    assert proc.returncode == 0, output[-6000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["data/first_shard"] for r in rows] == list(range(STEPS))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS and (run_dir / "checkpoints" / f"step_{STEPS}" / "COMPLETE").exists()


def test_killed_train_worker_rollout_actor_and_weight_store_are_each_recovered(tmp_path):
    """One job, three kills from outside (the train worker restarts from the last checkpoint through Ray Train's
    FailureConfig; the rollout actor is replaced by Ray Data and its shard redone; the weight store is restarted
    and the weights still reach the engine: the rollout stays on-policy)."""
    run_dir = tmp_path / "run"
    schedule = [("ray::RayTrainWorker", KILL_AFTER), ("RolloutWorker", KILL_AFTER + 2),
                ("ray::WeightStore", KILL_AFTER + 4)]
    # algorithm.kl_coef > 0 in this job too (one job start fewer): the frozen reference is the initial policy,
    # rebuilt by each restarted worker, so the first step's KL is 0 and every later step's positive
    proc, output, recovered = run_and_kill(run_dir, schedule, "algorithm.kl_coef=0.05")
    _assert_every_step_once(run_dir, proc, output)
    assert "restart" in output.lower() or "retry" in output.lower(), output[-4000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert max(r["rollout/logprob_gap"] for r in rows) < 1e-2
    assert abs(rows[0]["kl_loss"]) < 1e-6 and all(r["kl_loss"] > 0 for r in rows[1:])
    for (title, after), seconds in zip(schedule, recovered):
        print(f"\n[fault] {title} SIGKILL after step {after}: next step logged {seconds:.1f} s later")


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


@pytest.mark.extended
def test_killed_driver_leaves_no_process_behind_and_a_rerun_resumes(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.log"
    cmd = [sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}", *SHORT]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 900
        while max(_steps(run_dir), default=0) < KILL_AFTER:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        run_processes = set(descendants(proc.pid))
        proc.kill()
        proc.wait()
    killed_at = time.time()
    while any(alive(pid) for pid in run_processes) and time.time() - killed_at < 60:
        time.sleep(0.5)
    gone_after = time.time() - killed_at
    survivors = {pid: _title(pid) for pid in run_processes if alive(pid)}
    assert not survivors, f"alive 60 s after the driver was killed: {survivors}"
    print(f"\n[fault] driver SIGKILL after step {KILL_AFTER}: its {len(run_processes)} processes gone "
          f"{gone_after:.1f} s later")
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    _assert_every_step_once(run_dir, rerun, rerun.stdout + rerun.stderr)


COMMIT_JOB = ["trainer.total_steps=4", "trainer.save_every=2", "heldout.size=8", "heldout.sample_k=0"]


def _job(run_dir: Path, faults: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}", *COMMIT_JOB, *overrides],
                          cwd=REPO, env={**os.environ, "EAPO_FAULTS": faults}, capture_output=True, text=True,
                          timeout=900)


KILLS = {  # EAPO_FAULTS point -> step, in the order the run reaches them
    "heldout": 1,  # the rollout actor, its held-out measurement of step 1 done and not returned: measured again
    "store_publish": 2,  # the weight store, with version 2's publish in flight: restarted, the call retried
    "after_complete": 2,  # the train worker: step 2 committed (where its metrics line used to be lost and a
                          # restart could stall)
    "after_metrics": 4,  # step 4's line written, no COMPLETE: restart from step 2 drops lines 3-4, redoes them
}
# all four points of the train worker's step (before_publish: 1, after_complete: 2, after_publish: 3,
# after_metrics: 4) pass too (4 restarts, ~220 s on the CI machine): EAPO_KILL_EVERY_POINT=1 runs them with the
# other two processes' points; CI runs the two around COMMIT
if os.environ.get("EAPO_KILL_EVERY_POINT"):
    KILLS = {"heldout": 1, "before_publish": 1, "store_publish": 2, "after_complete": 2, "after_publish": 3,
             "after_metrics": 4}


def test_kills_at_every_point_of_a_step_lose_no_step(tmp_path):
    """Deterministic kills (``EAPO_FAULTS``) at the points of ``KILLS``: the rollout actor right after its held-out
    measurement, the weight store inside a publish, the train worker after the metrics line before ``COMPLETE``
    and after ``COMPLETE`` (with EAPO_KILL_EVERY_POINT=1 also before and after the weights are published).
    Restarts allowed: ``trainer.max_failures=4``; every step logged once, at its own data position, and the
    held-out measurement of step 1 logged although its first measurement died with the actor."""
    run_dir = tmp_path / "run"
    t0 = time.time()
    job = _job(run_dir, ",".join(f"{name}:step={step}" for name, step in KILLS.items()), "trainer.max_failures=4")
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-6000:]
    for name, step in KILLS.items():  # Ray may echo a worker's line twice: look for each, not a count
        assert (run_dir / "faults" / f"{name}-{step}").exists(), f"{name} of step {step} never fired"
        assert f"at {name} of step {step}" in output, output[-6000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["data/first_shard"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["heldout/weight_version"] == 0 and 0 <= rows[0]["heldout/accuracy"] <= 1
    assert max(r["rollout/logprob_gap"] for r in rows) < 1e-2  # the weights reached the engine after the store died
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    print(f"\n[fault] killed at {len(KILLS)} points of a step: job {time.time() - t0:.0f} s")


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while max(_steps(run_dir), default=0) < step:
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
        time.sleep(0.2)


def test_stopped_processes_are_killed_and_running_out_of_restarts_ends_with_one_line(tmp_path):
    """The hang monitor (``trainer.hang_timeout_s=10``): SIGSTOP of the rollout actor after step 1 -> killed,
    replaced by Ray Data, the run goes on; SIGSTOP of the train worker after step 2 -> killed; with
    ``trainer.max_failures=0`` the run then ends with one ``error:`` line and exit code 3."""
    run_dir, log = tmp_path / "run", tmp_path / "job.log"
    cmd = [sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}", *COMMIT_JOB, "trainer.max_failures=0",
           "trainer.hang_timeout_s=10"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        stopped = []
        try:
            _wait_for_step(run_dir, 1, proc, log)
            stopped += _pids("RolloutWorker", proc.pid)[:1]
            assert stopped, "no process titled RolloutWorker"
            os.kill(stopped[-1], signal.SIGSTOP)
            t_rollout = time.time()
            _wait_for_step(run_dir, 2, proc, log)
            rollout_recovered = time.time() - t_rollout
            complete = run_dir / "checkpoints" / "step_2" / "COMPLETE"  # committed after the step's metrics line
            while not complete.exists():
                assert proc.poll() is None, log.read_text()[-4000:]
                time.sleep(0.1)
            stopped += _pids("ray::RayTrainWorker", proc.pid)[:1]
            assert len(stopped) == 2, "no process titled ray::RayTrainWorker"
            os.kill(stopped[-1], signal.SIGSTOP)
            t_train = time.time()
            proc.wait(timeout=300)
            ended = time.time() - t_train
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in stopped:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert proc.returncode == 3, output[-6000:]
    for role in ("rollout", "train-rank0"):
        assert f"WARNING: {role} (pid " in output, output[-6000:]
    assert "sent no heartbeat for" in output and "(trainer.hang_timeout_s=10)" in output, output[-6000:]
    # the job's own line on stderr; stdout shares the log file, where a progress bar may leave a partial line
    # before it (and Ray's raylet messages, split by the bars' carriage returns, other lines starting "error: ")
    errors = re.findall(r"error: training failed[^\r\n]*", output)
    assert len(errors) == 1, output[-6000:]
    assert errors[0].startswith("error: training failed after 0 worker-group restarts (trainer.max_failures=0): "
                                "train worker rank 0: "), errors[0]
    assert "the newest checkpoint is step 2" in errors[0] and "run the same command again" in errors[0], errors[0]
    print(f"\n[fault] rollout actor SIGSTOP after step 1: step 2 logged {rollout_recovered:.1f} s later; train "
          f"worker SIGSTOP after step 2: killed and the run ended (rc 3) {ended:.1f} s later")
