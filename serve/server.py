"""Ray Serve LLM's ``LLMServer`` plus readiness, a health probe that catches hung engines, and ``follow``.

* Ready only once the model has generated a token (Serve routes no traffic to a replica before).
* ``check_health`` (called by Serve every ``health.period_s``) fails when the engine is dead (Ray's own
  check) or when its engine loop does not answer a no-op RPC within ``health.probe_timeout_s`` (a
  hung engine, which Ray's check misses); Serve then replaces the replica.
* With ``eapo_follow_dir`` the replica loads the newest complete checkpoint of that training run in
  place (``reload_weights``) at start and whenever a newer one appears, after in-flight requests finish.
"""
from __future__ import annotations

import asyncio
import logging

from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.openai_api_models import CompletionRequest, ErrorResponse

logger = logging.getLogger("ray.serve")


class ProbedLLMServer(LLMServer):
    """``LLMServer`` with a generation-backed readiness, an engine-loop health probe and checkpoint following."""

    async def start(self):
        await super().start()
        opts = self._llm_config.experimental_configs
        self._probe_timeout = float(opts.get("eapo_probe_timeout_s", 30.0))
        self._follow_dir, self._step = opts.get("eapo_follow_dir"), None
        if self._follow_dir:
            await self._load_newest()
            self._follower = asyncio.get_running_loop().create_task(self._follow(float(opts["eapo_follow_poll_s"])))
        await asyncio.wait_for(self._generate_one_token(), self._probe_timeout)

    async def _generate_one_token(self) -> None:
        request = CompletionRequest(model=self._llm_config.model_id, prompt="1", max_tokens=1, temperature=0.0)
        async for out in await self.completions(request):
            if isinstance(out, ErrorResponse):
                raise RuntimeError(f"readiness probe failed: {out.error.message}")

    async def check_health(self) -> None:
        await super().check_health()
        try:
            await asyncio.wait_for(self.collective_rpc("check_health"), self._probe_timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(f"engine did not answer within {self._probe_timeout}s; replacing the replica") from None

    async def _load_newest(self) -> None:
        from core.run_dir import latest_checkpoint

        found = await asyncio.to_thread(latest_checkpoint, self._follow_dir)
        if found is None or found[0] == self._step:
            return
        try:
            await asyncio.wait_for(self.pause(mode="wait"), 600)  # requests in flight finish on the old weights
            await self.collective_rpc("reload_weights", kwargs={"weights_path": found[1]})
        finally:
            await self.resume()
        self._step = found[0]
        logger.info("follow: %s now serves step %d (%s)", self._llm_config.model_id, found[0], found[1])

    async def _follow(self, poll_s: float) -> None:
        while True:
            await asyncio.sleep(poll_s)
            try:
                await self._load_newest()
            except Exception:  # noqa: BLE001 - a checkpoint rotated away mid-read: retry on the next poll
                logger.exception("follow: reloading the newest checkpoint failed; retrying in %.0fs", poll_s)
