"""A pool of sandboxed math-verify child processes with hard per-call timeouts.

math-verify's own timeouts use ``signal.alarm`` and fail (or silently score 0) outside the main
thread. Here every parse+verify runs in a separate process; the caller waits on the pipe with
``select`` and, on timeout, kills the child and starts a fresh one. This works identically in the
main thread, worker threads, Ray tasks and Ray actors, and a hang or crash never reaches the caller.
"""
from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
import time

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_verify_worker.py")
_STARTUP_TIMEOUT_S = 120.0


class _Worker:
    """One child process speaking the JSON-lines protocol of ``_verify_worker.py``."""

    def __init__(self, mem_mb: int):
        env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", _WORKER_SCRIPT, str(mem_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True,
        )
        self._buf = b""
        if self._readline(_STARTUP_TIMEOUT_S) is None:
            self.kill()
            raise RuntimeError("math-verify worker failed to start")

    def _readline(self, timeout_s: float) -> bytes | None:
        """Read one line from the child within ``timeout_s``; None on timeout or EOF."""
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def judge(self, answer: str, gold: str, timeout_s: float) -> str | None:
        """Reason string from the child, or None when it timed out or died."""
        try:
            self.proc.stdin.write((json.dumps({"a": answer, "g": gold}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._readline(timeout_s)
        if line is None:
            return None
        try:
            return json.loads(line)["r"]
        except (ValueError, KeyError):
            return None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


class VerifierPool:
    """Thread-safe pool of ``size`` lazily started workers."""

    def __init__(self, size: int, mem_mb: int = 2048):
        self.size = size
        self.mem_mb = mem_mb
        self.pid = os.getpid()
        self._idle: queue.Queue = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # None = slot whose worker is not started yet

    def judge(self, answer: str, gold: str, timeout_s: float) -> str:
        """``correct``/``wrong``/``parse_error``, or ``timeout`` when the child exceeded the bound."""
        worker = self._idle.get()
        try:
            if worker is None:
                worker = _Worker(self.mem_mb)
            reason = worker.judge(answer, gold, timeout_s)
            if reason is None:
                alive = worker.proc.poll() is None
                worker.kill()
                worker = None
                return "timeout" if alive else "parse_error"
            return reason
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Kill all idle workers."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.kill()
        for _ in range(self.size):
            self._idle.put(None)


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(size: int | None = None, mem_mb: int = 2048) -> VerifierPool:
    """The process-wide pool (recreated after a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            if size is None:
                size = int(os.environ.get("EAPO_VERIFIER_WORKERS", "0")) or max(1, min(4, os.cpu_count() or 1))
            _POOL = VerifierPool(size, mem_mb)
        return _POOL
