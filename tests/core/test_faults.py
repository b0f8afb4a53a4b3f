"""Fault injection (``core.faults``, ``EAPO_FAULTS``): a named point SIGKILLs the process once per run
directory; other points and steps pass; a misspelt specification is a ConfigError naming the variable."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from core.faults import ENV, planned
from core.typed import ConfigError
from tests.conftest import REPO

SCRIPT = "import sys; from core.faults import point; point(sys.argv[1], int(sys.argv[2]), sys.argv[3]); print('passed')"


def reach(name: str, step: int, run_dir, spec: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, name, str(step), str(run_dir)], cwd=REPO,
                          env={**os.environ, ENV: spec}, capture_output=True, text=True, timeout=60)


def test_the_named_point_kills_once_per_run_dir(tmp_path):
    spec = "after_publish:step=1,after_complete:step=2"
    first = reach("after_complete", 2, tmp_path, spec)
    assert first.returncode == -signal.SIGKILL and "passed" not in first.stdout, first
    assert f"[{ENV}] SIGKILL of process" in first.stderr and "at after_complete of step 2" in first.stderr
    assert (tmp_path / "faults" / "after_complete-2").exists()
    again = reach("after_complete", 2, tmp_path, spec)  # the restarted process passes the point
    assert again.returncode == 0 and again.stdout.strip() == "passed", again
    other = reach("after_complete", 3, tmp_path, spec)
    assert other.returncode == 0, other


def test_no_faults_without_the_variable(tmp_path):
    assert reach("after_complete", 2, tmp_path, "").returncode == 0
    assert planned({}) == {}


@pytest.mark.parametrize("spec", ["after_compete:step=2", "after_complete:2", "after_complete:step=x"])
def test_a_misspelt_specification_names_the_variable_and_the_points(spec):
    with pytest.raises(ConfigError) as info:
        planned({ENV: spec})
    assert str(info.value).startswith(f"{ENV}: cannot read") and "after_metrics" in str(info.value)
