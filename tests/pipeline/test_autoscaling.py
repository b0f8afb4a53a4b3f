"""Autoscaling, proven on one machine with Ray's fake multi-node autoscaler (``autoscaling_scenario.py``):
a head that cannot hold the job (no CPUs), the job's resource requests make the autoscaler add worker
nodes, the job completes, and the idle nodes are released after it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_the_autoscaler_adds_nodes_for_the_job_and_releases_them_after(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "pipeline" / "autoscaling_scenario.py"), str(run_dir),
                           str(REPO), "trainer.total_steps=3", "trainer.save_every=3", "heldout.size=16",
                           "heldout.sample_k=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["job_rc"] == 0, result["output"]
    assert result["first_counts"][:1] == [0]  # the head alone cannot hold the job: no worker node at first
    assert result["max_workers"] >= 1, result["output"]  # the autoscaler added nodes for the job's requests
    assert result["released_after_s"] is not None, result  # ... and released them once idle
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3
    print(f"\n[autoscaling] {result['max_workers']} worker node(s) added; all released "
          f"{result['released_after_s']:.0f} s after the job")
