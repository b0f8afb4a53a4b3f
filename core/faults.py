"""Deterministic fault injection for the fault tests: ``EAPO_FAULTS`` kills a process at a named point.

``EAPO_FAULTS="<point>:step=<N>[,<point>:step=<N>...]"`` (unset or empty: no faults, :func:`point` costs a
dictionary lookup) makes the process that reaches ``<point>`` of step ``N`` send itself SIGKILL, the way an
OOM killer or a lost node would end it: no cleanup, no exception. Each fault fires once per run directory:
before the kill, a marker ``<run_dir>/faults/<point>-<N>`` is written durably, so the restarted process
passes the same point. The points of a training step, in order (:data:`POINTS`):

- ``before_publish``: the update is done, the new weights are not yet published;
- ``after_publish``: the weights of step N are in the weight store; no checkpoint files yet;
- ``after_metrics``: the checkpoint's files and the step's ``metrics.jsonl`` line are written, no ``COMPLETE``;
- ``after_complete``: the checkpoint of step N has just been committed (``COMPLETE`` written).

Two more points live in other processes of the step (the process named is the one killed):

- ``heldout``: the rollout actor has measured step N's held-out accuracy (``heldout.every``) and not yet returned
  it with the step's shard: the measurement is lost with the actor, and the replacement must measure it again;
- ``store_publish``: the weight store has received version N's weights and not yet stored them (the trainer's
  publish call is in flight: Ray restarts the store and retries the call).

Ray workers inherit the driver's environment on a local cluster; for a submitted job pass the variable in the
runtime environment. The driver checks the variable before anything starts (:func:`planned`).
"""
from __future__ import annotations

import os
import re
import signal
import sys

from core.durable import write_durably

ENV = "EAPO_FAULTS"
POINTS = ("before_publish", "after_publish", "after_metrics", "after_complete", "heldout", "store_publish")
_SPEC = re.compile(r"(\w+):step=(\d+)")


def planned(env: dict | None = None) -> dict[tuple[str, int], None]:
    """The faults ``EAPO_FAULTS`` asks for, as {(point, step)}; raises :class:`~core.typed.ConfigError` naming
    the variable, the entry at fault and the valid points."""
    from core.typed import ConfigError

    value = (os.environ if env is None else env).get(ENV, "").strip()
    faults = {}
    for entry in filter(None, (e.strip() for e in value.split(","))):
        match = _SPEC.fullmatch(entry)
        if not match or match.group(1) not in POINTS:
            raise ConfigError(ENV, f"cannot read {entry!r} of {value!r}; expected <point>:step=<N>[,...] with "
                                   f"<point> one of {', '.join(POINTS)}")
        faults[(match.group(1), int(match.group(2)))] = None
    return faults


def point(name: str, step: int, run_dir: str) -> None:
    """Fault-injection point ``name`` of ``step``: SIGKILL this process when ``EAPO_FAULTS`` names it and it has
    not fired in ``run_dir`` yet (see module docstring); otherwise nothing."""
    if not os.environ.get(ENV) or (name, step) not in planned():
        return
    marker = os.path.join(run_dir, "faults", f"{name}-{step}")
    if os.path.exists(marker):
        return
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    write_durably(marker, f"{os.getpid()}\n".encode())
    print(f"[{ENV}] SIGKILL of process {os.getpid()} at {name} of step {step}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
