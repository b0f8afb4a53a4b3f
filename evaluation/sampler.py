"""Concurrent sampling from an OpenAI-compatible endpoint: retries, a resumable disk cache, and
``max_tokens`` fitted to the model's context per prompt (prompts that cannot fit are skipped, not fatal).

Retries: a connection error, a timeout, 408, 429 or any 5xx is retried with exponential backoff (or the
server's ``Retry-After``) until the request has failed for ``retry_for_s`` seconds, long enough for Ray
Serve to replace a dead or hung engine (measured 43-49 s and 126 s); any other 4xx is never retried. One
log line when requests start failing, one when the endpoint answers again.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.benchmarks import Problem
from evaluation.config import EvalConfig

RETRYABLE_STATUS = {408, 429}  # and every 5xx
FATAL_STATUS = {401, 403, 404}
MAX_BACKOFF_S = 10.0
logger = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint cannot serve this evaluation at all (down, wrong key, unknown model); one line."""


class ResponseCache:
    """Append-only JSONL cache of completed requests, keyed by a hash of the request."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list[str]] = {}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.entries[row["key"]] = row["texts"]
                    except (ValueError, KeyError):
                        continue  # a torn last line from an interrupted run
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def put(self, key: str, problem_id: str, texts: list[str]) -> None:
        self.entries[key] = texts
        self._file.write(json.dumps({"key": key, "id": problem_id, "texts": texts}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class Skipped:
    """Problems left out of the scores, by reason, with the first server message of each reason."""

    too_long: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)


def request_key(cfg: EvalConfig, prompt: str, n: int) -> str:
    """Identity of a sampling request (independent of endpoint URL, so a moved server resumes)."""
    ident = [cfg.model, cfg.api, prompt, n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def base_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def make_client(cfg: EvalConfig):
    """An ``openai.AsyncOpenAI`` client for the endpoint (retries are ours, not the client's)."""
    import openai

    key = cfg.api_key or os.environ.get("EAPO_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return openai.AsyncOpenAI(base_url=base_url(cfg.endpoint), api_key=key, max_retries=0,
                              timeout=cfg.request_timeout_s)


async def context_length(client, cfg: EvalConfig) -> int | None:
    """The served model's context length (None if the server does not say); ``EndpointError`` if unusable."""
    import openai

    url = base_url(cfg.endpoint)
    try:
        models = await client.with_options(timeout=min(cfg.request_timeout_s, 30.0), max_retries=2).models.list()
    except openai.APIConnectionError as exc:
        raise EndpointError(f"cannot reach the endpoint {url} ({exc.__cause__ or exc}); is the server running?") from None
    except openai.APIStatusError as exc:
        raise EndpointError(f"the endpoint {url} answered GET /models with HTTP {exc.status_code}"
                            + (" (wrong or missing api_key)" if exc.status_code == 401 else "")) from None
    card = next((m for m in models.data if m.id == cfg.model), None)
    if card is None:
        raise EndpointError(f"the endpoint {url} does not serve model {cfg.model!r}; it serves "
                            f"{[m.id for m in models.data]}")
    extra = card.model_extra or {}
    value = extra.get("max_model_len") or (extra.get("metadata") or {}).get("max_request_context_length")
    return int(value) if value else None


async def _request(client, cfg: EvalConfig, prompt: str, n: int, max_tokens: int, **overrides) -> tuple[list[str], int]:
    """(texts, prompt tokens) of one sampling request."""
    common = dict(model=cfg.model, n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max_tokens,
                  seed=cfg.seed) | overrides
    if cfg.api == "chat":
        resp = await client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
        texts = [c.message.content or "" for c in resp.choices]
    else:
        resp = await client.completions.create(prompt=prompt, **common)
        texts = [c.text for c in resp.choices]
    return texts, (resp.usage.prompt_tokens if resp.usage else 0)


class Outage:
    """Shared by the requests of one evaluation: logs one line when requests start failing transiently
    (not one per request or per retry) and one when a request succeeds again."""

    def __init__(self, cfg: EvalConfig):
        self.url, self.retry_for_s, self.since = base_url(cfg.endpoint), cfg.retry_for_s, None

    def failing(self, error: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("evaluation: %s is not answering (%s); retrying each request for up to %.0f s "
                           "(retry_for_s) while the server recovers", self.url, error, self.retry_for_s)

    def answered(self) -> None:
        if self.since is not None:
            logger.warning("evaluation: %s answers again after %.0f s", self.url, time.monotonic() - self.since)
            self.since = None


def _retry_after(exc) -> float | None:
    """The response's ``Retry-After`` in seconds (the delta-seconds form), else None."""
    try:
        value = float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _describe(exc) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        message = re.sub(r"^Error code: \d+ - ", "", str(exc.message))
        return f"HTTP {exc.status_code}: {message[:200]}"
    return f"{type(exc).__name__}: {exc.__cause__ or exc}"[:300]


async def _with_retries(cfg: EvalConfig, problem: Problem, call, outage: Outage | None = None):
    """``await call()``, retrying transient failures (see the module docstring) for ``cfg.retry_for_s``;
    a 4xx other than 401/403/404 returns its message; ``EndpointError`` when the retries run out."""
    import openai

    outage = outage or Outage(cfg)
    first_failure, attempt = None, 0
    while True:
        try:
            result = await call()
        except openai.APIStatusError as exc:
            if exc.status_code in FATAL_STATUS:
                raise EndpointError(f"{base_url(cfg.endpoint)} refused {problem.id} with HTTP {exc.status_code}: "
                                    f"{exc.message}") from None
            if exc.status_code < 500 and exc.status_code not in RETRYABLE_STATUS:
                return str(exc.message)
            error, wait = exc, _retry_after(exc)
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            error, wait = exc, None
        else:
            outage.answered()
            return result
        now = time.monotonic()
        first_failure = now if first_failure is None else first_failure
        left = cfg.retry_for_s - (now - first_failure)
        if left <= 0:
            raise EndpointError(f"request for {problem.id} to {base_url(cfg.endpoint)} still failing after "
                                f"{now - first_failure:.0f} s of retries (retry_for_s={cfg.retry_for_s:g}): "
                                f"{_describe(error)}") from None
        outage.failing(_describe(error))
        if wait is None:  # no word from the server: exponential backoff with jitter
            wait, attempt = min(MAX_BACKOFF_S, 0.5 * 2 ** attempt) * (0.5 + random.random()), attempt + 1
        await asyncio.sleep(max(0.05, min(wait, MAX_BACKOFF_S, left)))


async def _fitted_max_tokens(client, cfg: EvalConfig, problem: Problem, context: int | None, outage: Outage):
    """``cfg.max_tokens`` capped to what fits after the prompt; None if nothing fits; a str if rejected."""
    if context is None or len(problem.prompt.encode()) + 64 + cfg.max_tokens <= context:
        return cfg.max_tokens  # a token is at least a byte: fits whatever the tokenizer and template
    probe = await _with_retries(cfg, problem, lambda: _request(client, cfg, problem.prompt, 1, 1, temperature=0.0),
                                outage)
    if isinstance(probe, str):
        return None if "context" in probe.lower() or "too long" in probe.lower() else probe
    room = context - probe[1]
    return min(cfg.max_tokens, room) if room >= 1 else None


async def sample_all(cfg: EvalConfig, jobs: list[tuple[Problem, int]], cache: ResponseCache,
                     progress=None) -> tuple[list[list[str] | None], Skipped]:
    """Texts for each ``(problem, n)`` job (None: skipped, see ``Skipped``), ``cfg.concurrency`` in flight."""
    client = make_client(cfg)
    sem = asyncio.Semaphore(cfg.concurrency)
    skipped = Skipped()
    outage = Outage(cfg)

    async def one(problem: Problem, n: int) -> list[str] | None:
        key = request_key(cfg, problem.prompt, n)
        texts = cache.entries.get(key)
        if texts is None:
            async with sem:
                max_tokens = await _fitted_max_tokens(client, cfg, problem, context, outage)
                out = max_tokens if not isinstance(max_tokens, int) else await _with_retries(
                    cfg, problem, lambda: _request(client, cfg, problem.prompt, n, max_tokens), outage)
            if out is None:
                skipped.too_long.add(problem.id)
            elif isinstance(out, str):
                skipped.rejected[problem.id] = out
            else:
                texts = out[0]
                if len(texts) != n:
                    raise EndpointError(f"{problem.id}: the endpoint returned {len(texts)} choices, expected n={n}")
                cache.put(key, problem.id, texts)
        if progress is not None:
            progress.update(1)
        return texts

    try:
        context = await context_length(client, cfg)
        return list(await asyncio.gather(*(one(p, n) for p, n in jobs))), skipped
    finally:
        await client.close()
