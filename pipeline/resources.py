"""The run's resource requests checked against the Ray cluster before anything is scheduled.

Ray waits forever for an actor no node can hold. :func:`unfit` compares what the run asks for (a list of
:class:`Request`: rollout actors, train workers, the data stages, the periodic evaluator; built by
``pipeline.run.resource_requests``) with the nodes Ray reports, and names the config key at fault:

- one actor or worker that no node can ever hold:
  ``rollout.cpus_per_actor=4 needs 4 CPU on one node; the largest node has 2``;
- all of them at once more than the whole cluster has (they run concurrently during training).

:func:`ensure_resources` raises that as a :class:`ResourceError` (a ``ConfigError``: one line, exit code 2),
or, on an autoscaling cluster (``ray_autoscaling``), asks the autoscaler for the bundles and waits up to
``ray_resource_wait_s`` for nodes that fit, printing progress, before raising the same error.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from core.config import Config
from core.typed import ConfigError

EPS = 1e-9
POLL_S = 5.0  # seconds between looks at the cluster while the autoscaler adds nodes


class ResourceError(ConfigError):
    """A request the cluster cannot satisfy; ``str()`` is the message itself (it starts with the key)."""

    def __init__(self, key: str, message: str):
        ValueError.__init__(self, message)
        self.key, self.why = key, message


@dataclass(frozen=True)
class Request:
    """``count`` actors or workers of one kind, each needing ``bundle`` (``{"CPU": 0.5, "GPU": 0}``) on one node.

    ``keys`` names, per resource, the ``key=value`` setting that asks for it (or the stage, for the fixed
    requests of the data stages); ``count_key`` the setting that sets ``count`` (None: one);
    ``during_training``: alive while the run trains (counted in the cluster-wide total), or only before."""

    what: str
    count: int
    bundle: dict
    keys: dict
    count_key: str | None = None
    during_training: bool = True


def _num(value: float) -> str:
    return f"{value:g}"


def node_resources() -> list[dict]:
    """Total resources of every alive node of the connected Ray cluster (``ray.nodes()``)."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def _fits(bundle: dict, node: dict) -> bool:
    return all(node.get(name, 0.0) + EPS >= amount for name, amount in bundle.items() if amount > 0)


def _single_problem(req: Request, nodes: list[dict]) -> ResourceError | None:
    """The error of one actor/worker of ``req`` that no node can hold, or None."""
    if any(_fits(req.bundle, node) for node in nodes):
        return None
    for name, amount in req.bundle.items():
        largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if amount > largest + EPS:
            key = req.keys[name]
            return ResourceError(key.split("=")[0], f"{key} needs {_num(amount)} {name} on one node "
                                                   f"({req.what}); the largest node has {_num(largest)}")
    wanted = {name: amount for name, amount in req.bundle.items() if amount > 0}
    keys = " with ".join(req.keys[name] for name in wanted)
    shapes = ", ".join("{" + ", ".join(f"{n}: {_num(node.get(n, 0.0))}" for n in wanted) + "}" for node in nodes)
    return ResourceError(keys.split("=")[0], f"{keys} needs {' and '.join(f'{_num(a)} {n}' for n, a in wanted.items())} "
                                             f"on one node ({req.what}); no node has all of it (nodes: {shapes})")


def _total_problem(requests: list[Request], nodes: list[dict]) -> ResourceError | None:
    """The error when the requests alive during training together exceed the cluster's total of some
    resource, or None."""
    requests = [req for req in requests if req.during_training]
    names = sorted({name for req in requests for name in req.bundle})
    for name in names:
        parts = [(req, req.count * req.bundle.get(name, 0.0)) for req in requests if req.bundle.get(name, 0.0) > 0]
        need, have = sum(p for _, p in parts), sum(node.get(name, 0.0) for node in nodes)
        if need > have + EPS:
            largest = max(parts, key=lambda p: p[1])[0]
            terms = ", ".join((f"{r.count_key}={r.count} x " if r.count_key else "") + r.keys[name]
                              for r, _ in parts)
            key = largest.count_key or largest.keys[name].split("=")[0]
            return ResourceError(key, f"the run needs {_num(need)} {name} at once ({terms}); "
                                      f"the cluster has {_num(have)} in total")
    return None


def unfit(requests: list[Request], nodes: list[dict]) -> ResourceError | None:
    """The first request the cluster of ``nodes`` (total resources per node) can never satisfy, or None."""
    for req in requests:
        problem = _single_problem(req, nodes)
        if problem is not None:
            return problem
    return _total_problem(requests, nodes)


def wait_plan(cfg: Config) -> dict:
    """How an unfit request is handled: ``autoscaling`` (``ray_autoscaling``: ask the autoscaler and wait)
    and the bound of that wait in seconds (``ray_resource_wait_s``)."""
    return {"autoscaling": cfg.ray_autoscaling, "wait_s": cfg.ray_resource_wait_s}


def autoscaler_bundles(requests: list[Request]) -> list[dict]:
    """One bundle per actor/worker (zero amounts left out), as ``request_resources`` takes them."""
    out = []
    for req in requests:
        bundle = {name: amount for name, amount in req.bundle.items() if amount > 0}
        out += [dict(bundle) for _ in range(req.count)] if bundle else []
    return out


def ensure_resources(requests: list[Request], cfg: Config, log=print) -> None:
    """Return when the connected cluster can hold every request; else raise :class:`ResourceError` at once,
    or with ``ray_autoscaling`` after asking the autoscaler and waiting up to ``ray_resource_wait_s``
    (the request is withdrawn again either way: the job's own actors keep the nodes it gets busy)."""
    plan = wait_plan(cfg)
    problem = unfit(requests, node_resources())
    if problem is None:
        return
    if not plan["autoscaling"]:
        raise problem
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=autoscaler_bundles(requests))
    start = time.monotonic()
    try:
        while problem is not None:
            waited = time.monotonic() - start
            if waited >= plan["wait_s"]:
                raise ResourceError(problem.key, f"{problem} (after waiting {waited:.0f} s for the autoscaler, "
                                                 f"ray_resource_wait_s={_num(plan['wait_s'])})")
            log(f"waiting for the autoscaler ({waited:.0f} of {_num(plan['wait_s'])} s, ray_resource_wait_s): {problem}")
            time.sleep(min(POLL_S, plan["wait_s"] - waited))
            problem = unfit(requests, node_resources())
    finally:
        request_resources(bundles=[])
