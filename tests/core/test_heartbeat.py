"""Heartbeats on real processes: a stopped (SIGSTOP) process stops beating and is found and killed after the
timeout, a busy one keeps beating, a dead one is only forgotten, and a reused pid is never killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from core.heartbeat import HeartbeatWatch, kill_if_same, period_s, process_start
from tests.conftest import REPO

BEATING = """
import sys, time
from core.heartbeat import Heartbeat
Heartbeat(sys.argv[1], sys.argv[2], 0.2)
print("beating", flush=True)
while True:
    sum(range(10**6))  # busy: the heartbeat thread beats anyway
"""


@pytest.fixture
def beating(tmp_path):
    procs = []

    def start(role: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", BEATING, str(tmp_path), role], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "beating"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _stale_after(watch: HeartbeatWatch, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watch.stale()
        time.sleep(0.2)
    return watch.stale()


def test_a_stopped_process_is_found_and_killed_a_busy_one_is_not(tmp_path, beating):
    busy, stopped = beating("rollout"), beating("train-rank0")
    watch = HeartbeatWatch(str(tmp_path), timeout_s=1.5)
    os.kill(stopped.pid, signal.SIGSTOP)
    stale = _stale_after(watch, 3.0)
    assert [(r["role"], r["pid"]) for _, r, _ in stale] == [("train-rank0", stopped.pid)], stale
    path, record, silent = stale[0]
    assert silent >= 1.5 and record["start"] == process_start(stopped.pid)
    assert kill_if_same(record["pid"], record["start"])
    assert stopped.wait(timeout=10) == -signal.SIGKILL  # SIGKILL ends a stopped process
    watch.forget(path)
    assert not os.path.exists(path) and busy.poll() is None
    assert not kill_if_same(record["pid"], record["start"])  # gone: nothing to kill


def test_a_reused_pid_is_not_killed(beating):
    proc = beating("rollout")
    assert not kill_if_same(proc.pid, process_start(proc.pid) + 1)  # another process's start time
    assert proc.poll() is None


def test_the_period_is_a_sixth_of_the_timeout_within_bounds():
    assert period_s(120) == 10 and period_s(30) == 5 and period_s(2) == 1
