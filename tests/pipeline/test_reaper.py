"""pipeline.reaper: a SIGKILLed driver leaves no process behind (the e2e version is in test_faults.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pipeline.reaper import alive
from tests.conftest import REPO

DRIVER = """
import subprocess, sys, time
from pipeline.reaper import watch
watch()
# like Ray's agents: a child in its own session, which a process-group kill would miss
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_the_processes_of_a_killed_driver_are_reaped():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(driver.stdout.readline())
    time.sleep(2.5)  # the watchdog records the driver's descendants every second
    assert alive(child)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 20
    while alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(child), "the driver's child survived it"


def test_a_driver_that_exits_normally_takes_its_watchdog_with_it():
    code = "from pipeline.reaper import watch, _WATCHDOG; import pipeline.reaper as r; watch(); print(r._WATCHDOG.pid)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    watchdog = int(out.stdout.strip())
    deadline = time.time() + 20
    while alive(watchdog) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(watchdog)
