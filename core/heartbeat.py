"""Heartbeats: how a hung (stopped, frozen) rollout actor or train worker is told from a slow one.

Each rollout actor and train worker runs a :class:`Heartbeat`: a daemon thread that rewrites
``<run_dir>/heartbeats/<role>-<host>-<pid>.json`` every ``period_s`` with a counter that only grows. A
process that is merely busy (a long generate, a DeepSpeed step, waiting for weights or data) keeps beating:
the thread runs whenever the interpreter does. A stopped (SIGSTOP) or frozen process stops beating.

:class:`HeartbeatWatch` is the watcher's side (the driver, ``pipeline.hang_monitor``): it reads the files and
reports, by its own clock (no clock shared between nodes is needed), every process whose counter has not
changed for ``timeout_s``. :func:`kill_if_same` ends such a process (SIGKILL, also effective on a stopped
one) unless its pid now belongs to another process; its supervisor (Ray Data for rollout actors, Ray Train
for the worker group) then restarts it like any dead one.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

FOLDER = "heartbeats"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None when
    there is no such process: with the pid, it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def kill_if_same(pid: int, start: int | None) -> bool:
    """SIGKILL ``pid`` if it is still the process that started at ``start``; whether a signal was sent."""
    if start is None or process_start(pid) != start:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class Heartbeat:
    """Daemon thread beating for this process (see module docstring); ``node_id`` tells the watcher where to
    send the kill. :meth:`stop` ends it and removes the file (a process that ends cleanly is not hung)."""

    def __init__(self, run_dir: str, role: str, period_s: float, node_id: str = ""):
        folder = os.path.join(run_dir, FOLDER)
        os.makedirs(folder, exist_ok=True)
        self.pid = os.getpid()
        self.path = os.path.join(folder, f"{role}-{socket.gethostname()}-{self.pid}.json")
        self.record = {"role": role, "pid": self.pid, "start": process_start(self.pid), "node_id": node_id,
                       "host": socket.gethostname(), "beat": 0}
        self.period_s, self.done = period_s, threading.Event()
        self._write()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.thread.start()

    def _write(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.record, f)
        os.replace(tmp, self.path)  # readers see a whole record; durability does not matter here

    def _run(self) -> None:
        while not self.done.wait(self.period_s):
            self.record["beat"] += 1
            try:
                self._write()
            except OSError:  # run_dir gone or full: the run reports that itself; the watcher sees no beat
                pass

    def stop(self) -> None:
        self.done.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def period_s(timeout_s: float) -> float:
    """How often processes beat and the watcher looks: a sixth of the timeout, between 1 and 10 s."""
    return min(10.0, max(1.0, timeout_s / 6))


def start_heartbeat(cfg, role: str) -> Heartbeat | None:
    """This Ray process's heartbeat as ``role`` (``rollout``, ``train-rank<r>``) for ``trainer.hang_timeout_s``;
    None when that is 0 (off)."""
    timeout = cfg.trainer.hang_timeout_s
    if not timeout:
        return None
    import ray

    return Heartbeat(cfg.run_dir, role, period_s(timeout), node_id=ray.get_runtime_context().get_node_id())


class HeartbeatWatch:
    """The watcher's view of ``<run_dir>/heartbeats``: :meth:`stale` lists the records whose counter has not
    changed for ``timeout_s`` seconds of this process's clock."""

    def __init__(self, run_dir: str, timeout_s: float):
        self.folder, self.timeout_s = os.path.join(run_dir, FOLDER), timeout_s
        self.seen: dict[str, tuple[int, float]] = {}  # file -> (beat, when it last changed)

    def stale(self, now: float | None = None) -> list[tuple[str, dict, float]]:
        """(file, record, seconds without a beat) of every process silent for at least ``timeout_s``."""
        now = time.monotonic() if now is None else now
        out = []
        names = os.listdir(self.folder) if os.path.isdir(self.folder) else []
        for name in sorted(n for n in names if n.endswith(".json")):
            path = os.path.join(self.folder, name)
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue  # removed or being replaced: read it next time
            beat, since = self.seen.get(path, (None, now))
            if beat != record.get("beat"):
                self.seen[path] = (record.get("beat"), now)
            elif now - since >= self.timeout_s:
                out.append((path, record, now - since))
        return out

    def forget(self, path: str) -> None:
        """Drop ``path`` (its process was killed or is gone): removed from disk and from the watch."""
        self.seen.pop(path, None)
        try:
            os.unlink(path)
        except OSError:
            pass
