"""The driver's hang monitor: a stopped or frozen rollout actor or train worker is killed, so that it restarts
like a dead one, within ``trainer.hang_timeout_s`` (plus one check period) instead of at the 900 s data or
weight timeouts.

Every rollout actor and train worker beats (``core.heartbeat.start_heartbeat``); a daemon thread of the driver
(:class:`HangMonitor`) checks the beats every ``core.heartbeat.period_s`` and sends each
process silent for ``trainer.hang_timeout_s`` a SIGKILL on its own node (a zero-CPU Ray task pinned there),
with one ``WARNING`` line naming the process, how long it was silent and the key. Ray Data restarts a killed
rollout actor and redoes its shard; Ray Train restarts the worker group from the newest checkpoint (counted
against ``trainer.max_failures``).
"""
from __future__ import annotations

import threading

from core.heartbeat import HeartbeatWatch, kill_if_same, period_s


def _kill_on_node(record: dict) -> bool:
    """SIGKILL the process of ``record`` on its node (a Ray task pinned there); whether it was still there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(kill_if_same)
    if not record.get("node_id"):
        return kill_if_same(record["pid"], record.get("start"))
    strategy = NodeAffinitySchedulingStrategy(record["node_id"], soft=False)
    try:
        return ray.get(task.options(scheduling_strategy=strategy).remote(record["pid"], record.get("start")),
                       timeout=60)
    except Exception:  # noqa: BLE001 - the node is gone (its processes with it) or cannot be reached
        return False


class HangMonitor:
    """Daemon thread of the driver (see module docstring); ``log`` takes its one-line warnings."""

    def __init__(self, run_dir: str, timeout_s: float, log):
        self.watch, self.timeout_s, self.log = HeartbeatWatch(run_dir, timeout_s), timeout_s, log
        self.done = threading.Event()
        self.killed: list[dict] = []
        self.thread = threading.Thread(target=self._run, name="hang-monitor", daemon=True)

    def start(self) -> "HangMonitor":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.done.wait(period_s(self.timeout_s)):
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 - the monitor must never end the run
                self.log(f"WARNING: hang monitor: {type(err).__name__}: {err}")

    def check(self) -> list[dict]:
        """Kill every process silent for ``timeout_s``; returns the records of those killed."""
        killed = []
        for path, record, silent in self.watch.stale():
            if _kill_on_node(record):
                self.log(f"WARNING: {record.get('role')} (pid {record.get('pid')} on {record.get('host')}) sent no "
                         f"heartbeat for {silent:.0f} s (trainer.hang_timeout_s={self.timeout_s:g}): hung (stopped "
                         "or frozen); killed, so it restarts like a dead one")
                killed.append(record)
            self.watch.forget(path)  # killed, or already gone: either way no longer watched
        self.killed += killed
        return killed
