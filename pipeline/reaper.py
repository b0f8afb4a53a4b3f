"""A watchdog that outlives the job's driver: when the driver dies (SIGKILL, OOM killer, a closed terminal),
no process of its run survives it.

A local Ray started by ``ray.init`` is a tree of processes below the driver (GCS, raylet, workers, the
dashboard and runtime-env agents, vLLM and verifier children). Ray cleans that tree up when the driver exits
normally, but after a SIGKILL of the driver its agents keep running (measured: ``DashboardAgent`` and
``RuntimeEnvAgent`` still alive 60 s later). :func:`watch` starts ``python -m pipeline.reaper`` in its own
session with a pipe from the driver; every ``period_s`` it records the driver's descendants (pid and start
time, so a reused pid is never hit). When the pipe closes — the driver has exited, however — it waits
``grace_s`` for Ray's own shutdown, then sends SIGTERM to what is left of the last record, and SIGKILL
``grace_s`` later. Attached to an existing cluster the driver has no Ray processes below it, so nothing of the
cluster is touched.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of ``pid`` from /proc, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    return _stat(pid) is not None


def descendants(root: int) -> dict[int, str]:
    """{pid: start time} of every live process below ``root``."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                parent[int(entry)] = info
    found: dict[int, str] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in parent.items() if ppid in frontier and pid not in found}
        found.update({pid: parent[pid][1] for pid in frontier})
    return found


def _signal_left(record: dict[int, str], sig: int) -> int:
    """Send ``sig`` to the recorded processes still alive with the same start time; returns how many."""
    hit = 0
    for pid, started in record.items():
        info = _stat(pid)
        if pid != os.getpid() and info is not None and info[1] == started:
            try:
                os.kill(pid, sig)
                hit += 1
            except OSError:
                pass
    return hit


def reap(driver: int, pipe_fd: int, period_s: float = 1.0, grace_s: float = 3.0) -> None:
    """The watchdog's loop (see module docstring)."""
    record: dict[int, str] = {}
    while True:
        ready, _, _ = select.select([pipe_fd], [], [], period_s)
        if ready and not os.read(pipe_fd, 4096):
            break  # EOF: the driver is gone
        record = {pid: t for pid, t in descendants(driver).items() if pid != os.getpid()} or record
    time.sleep(grace_s)
    if _signal_left(record, signal.SIGTERM):
        time.sleep(grace_s)
        _signal_left(record, signal.SIGKILL)


def watch() -> None:
    """Start the watchdog for this process (idempotent). Its pipe's write end stays open in this process
    only (not inherited by children), so the watchdog sees EOF exactly when this process is gone."""
    global _WATCHDOG
    if _WATCHDOG is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, False)
    _WATCHDOG = subprocess.Popen([sys.executable, "-m", "pipeline.reaper", str(os.getpid()), str(read_fd)],
                                 pass_fds=(read_fd,), start_new_session=True, stdin=subprocess.DEVNULL)
    os.close(read_fd)
    _WATCHDOG_FDS.append(write_fd)


_WATCHDOG: subprocess.Popen | None = None
_WATCHDOG_FDS: list[int] = []


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the terminal is for the driver
    reap(int(sys.argv[1]), int(sys.argv[2]))
