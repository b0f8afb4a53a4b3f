"""The job on a multi-node Ray cluster started on this machine (``ray.cluster_utils.Cluster``), submitted
with ``ray job submit`` like on a real cluster.

Head: no CPUs (the driver, Ray Train's controller, the weight store: zero-CPU actors). Two worker nodes
with one CPU each: the train worker (1 CPU) fills one of them, so the rollout engine (0.5 CPU) and the
prompt stage must run on the other; the run directory is the only state they share. Only this test's own
cluster is started and stopped (no global ``ray stop``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Token authentication off for this test cluster: Cluster() starts it from this process, whose Ray client
# settles its auth mode on import (the README shows the token setup of `ray start` clusters).
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}


def _ray(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _status(dashboard: str, job_id: str) -> str:
    proc = _ray("job", "status", f"--address={dashboard}", job_id)
    return (proc.stdout + proc.stderr).lower()


def _alive_actors(dashboard: str) -> list[dict]:
    proc = _ray("list", "actors", f"--address={dashboard}", "--filter", "state=ALIVE", "--detail",
                "--format=json", "--limit=1000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", ENV["RAY_AUTH_MODE"])
    monkeypatch.setenv("PATH", ENV["PATH"])  # the job's `python` is this venv's, as after `ray start` from it
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                      "dashboard_port": 8366})
    nodes = [c.add_node(num_cpus=1, object_store_memory=300 * 1024 * 1024) for _ in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def _submit(dashboard: str, run_dir: Path, data_dir) -> str:
    submitted = _ray("job", "submit", f"--address={dashboard}", f"--working-dir={REPO}", "--no-wait", "--",
                     "python", "-m", "pipeline.run", f"run_dir={run_dir}", "trainer.total_steps=6",
                     "trainer.save_every=3", "heldout.size=16", "periodic_eval.every=6",
                     "periodic_eval.benchmarks=[gsm8k,aime24]", "periodic_eval.limit=4", "periodic_eval.n=2",
                     "periodic_eval.k=2", "periodic_eval.max_tokens=16", "rollout.max_model_len=512",
                     f"data_dir={data_dir}")
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    return re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group(0)


def _stop_after_checkpoint(dashboard: str, job_id: str, run_dir: Path, step: int) -> None:
    """``ray job stop`` once checkpoint ``step`` is committed; wait until the job is STOPPED and its actors gone."""
    complete, deadline = run_dir / "checkpoints" / f"step_{step}" / "COMPLETE", time.time() + 900
    while not complete.exists():  # steps 4-6 and the step-6 benchmark eval (an engine start) still to come
        assert time.time() < deadline, _status(dashboard, job_id)
        time.sleep(0.2)
    stop = _ray("job", "stop", f"--address={dashboard}", job_id)
    assert stop.returncode == 0, stop.stdout[-2000:] + stop.stderr[-2000:]
    while "stopped" not in _status(dashboard, job_id) or any(
            k in a["class_name"] for a in _alive_actors(dashboard) for k in ("RolloutWorker", "RayTrainWorker")):
        assert time.time() < deadline, _status(dashboard, job_id)
        time.sleep(1.0)


def test_job_submitted_to_a_three_node_cluster_spreads_rollout_and_training(cluster, tmp_path, data_dir):
    """Submitted, placed across the nodes, stopped with ``ray job stop`` after its step-3 checkpoint, submitted
    again with the same command: it resumes from step 3 and ends with every step once and its benchmark eval."""
    c, nodes = cluster
    dashboard = f"http://{c.webui_url}"
    run_dir = tmp_path / "job_run"
    job_id = _submit(dashboard, run_dir, data_dir)
    # while it trains: where did the engine and the train worker land?
    deadline, placed = time.time() + 900, None
    while placed is None and time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip():
            actors = _alive_actors(dashboard)
            placed = {kind: {a["node_id"] for a in actors if kind in a["class_name"]}
                      for kind in ("RolloutWorker", "RayTrainWorker")}
        elif any(s in _status(dashboard, job_id) for s in ("failed", "stopped")):
            break
        time.sleep(1.0)
    assert placed is not None, "the job never logged a step: " + _ray("job", "logs", f"--address={dashboard}",
                                                                        job_id).stdout[-5000:]
    _stop_after_checkpoint(dashboard, job_id, run_dir, 3)
    job_id = _submit(dashboard, run_dir, data_dir)  # the same command again: it must resume, not start over
    logs = _ray("job", "logs", f"--address={dashboard}", "--follow", job_id, timeout=1200)
    status = _status(dashboard, job_id)
    assert "succeeded" in status, logs.stdout[-5000:] + status
    assert "resuming from" in logs.stdout and "(step 3)" in logs.stdout, logs.stdout[-5000:]
    worker_ids = {n.node_id for n in nodes}
    assert len(placed["RolloutWorker"]) == 1 and len(placed["RayTrainWorker"]) == 1, placed
    assert placed["RolloutWorker"] | placed["RayTrainWorker"] <= worker_ids, placed
    assert placed["RolloutWorker"] != placed["RayTrainWorker"], placed
    # the run directory is the shared state: metrics, checkpoints, summary, all 6 steps once
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert max(r["rollout/logprob_gap"] for r in rows) < 1e-2  # weights crossed nodes to the engine
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6
    # periodic benchmark evaluation of the step-6 checkpoint, logged with the training metrics
    last = rows[-1]
    for bench in ("gsm8k", "aime24"):
        assert last[f"eval/{bench}/num_problems"] + last[f"eval/{bench}/skipped_too_long"] == 4
    for key in ("eval/gsm8k/avg@2", "eval/gsm8k/pass@2"):
        assert 0.0 <= last[key] <= 100.0, key
