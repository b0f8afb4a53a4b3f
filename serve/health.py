"""Each served model's engine health as the ingress sees it, probed in the background so no answer waits on it.

One task per model calls its probe (``LLMServer.check_health`` through the model's handle) every
``period_s``. A probe that raises (a dead engine: Ray's check; a hung one: ``ProbedLLMServer``'s engine-loop
RPC timing out after ``health.probe_timeout_s``) marks the model failing; one that answers marks it ok. A
probe still waiting after ``wait_s`` (the replica is saturated, or no replica runs while Serve replaces one)
changes nothing: the last verdict stands, so a model that failed stays failing until a replacement answers,
and a busy one is not declared down.

``GET /health`` reads the verdicts (waiting at most ``first_wait_s`` for the very first round); requests for a
failing model get 503 with ``Retry-After`` at once instead of waiting on a dead or hung engine.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

logger = logging.getLogger("ray.serve")

#: seconds a client is told to wait (``Retry-After``) when the model's engine is failing
RETRY_AFTER_S = 5


class EngineHealth:
    """Background verdicts per model: True (answers), False (failing), None (not probed yet)."""

    def __init__(self, probes: dict[str, Callable[[], Awaitable]], wait_s: float, period_s: float = 1.0,
                 first_wait_s: float = 0.9):
        self.probes, self.wait_s, self.period_s, self.first_wait_s = probes, wait_s, period_s, first_wait_s
        self.verdict: dict[str, bool | None] = {m: None for m in probes}
        self._tasks: dict[str, asyncio.Task] = {}

    def _start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = {m: loop.create_task(self._watch(m)) for m in self.probes}

    async def probe(self, model: str) -> bool | None:
        """Probe ``model`` now and record the verdict (None: no answer within ``wait_s``, verdict unchanged)."""
        try:
            await asyncio.wait_for(self.probes[model](), self.wait_s)
            ok = True
        except asyncio.TimeoutError:
            return None
        except Exception as exc:  # noqa: BLE001 - any failure of the probe is the verdict
            ok = False
            if self.verdict.get(model) is not False:
                logger.warning("health: model %r is failing (%s); answering 503 until a replica answers",
                               model, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        if ok and self.verdict.get(model) is False:
            logger.info("health: model %r answers again", model)
        self.verdict[model] = ok
        return ok

    async def _watch(self, model: str) -> None:
        while True:
            started = time.monotonic()
            await self.probe(model)
            await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - started)))

    async def ready(self) -> bool:
        """Whether every model's engine answered its last probe (never waits longer than ``first_wait_s``)."""
        self._start()
        deadline = time.monotonic() + self.first_wait_s
        while None in self.verdict.values() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return all(v is True for v in self.verdict.values())

    def failing(self, model: str) -> bool:
        """Whether ``model``'s last probe failed (unknown models and unprobed ones are not failing)."""
        self._start()
        return self.verdict.get(model) is False

    async def recheck(self, model: str, within_s: float = 1.0) -> bool:
        """After a 5xx for ``model``: False if a fresh probe fails or does not answer within ``within_s``."""
        if model not in self.probes:
            return True
        probe = asyncio.ensure_future(self.probe(model))
        try:
            return await asyncio.wait_for(asyncio.shield(probe), within_s) is True
        except asyncio.TimeoutError:
            return False
