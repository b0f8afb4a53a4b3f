"""Concurrent sampling from an OpenAI-compatible endpoint with retries and a resumable disk cache."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from pathlib import Path

from evaluation.benchmarks import Problem
from evaluation.config import EvalConfig

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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


def request_key(cfg: EvalConfig, prompt: str, n: int) -> str:
    """Identity of a sampling request (independent of endpoint URL, so a moved server resumes)."""
    ident = [cfg.model, cfg.api, prompt, n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def make_client(cfg: EvalConfig):
    """An ``openai.AsyncOpenAI`` client for the endpoint (retries are ours, not the client's)."""
    import openai

    base = cfg.endpoint.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    key = cfg.api_key or os.environ.get("EAPO_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=cfg.request_timeout_s)


def _is_retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRYABLE_STATUS


async def _request(client, cfg: EvalConfig, prompt: str, n: int) -> list[str]:
    common = dict(model=cfg.model, n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                  max_tokens=cfg.max_tokens, seed=cfg.seed)
    if cfg.api == "chat":
        resp = await client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
        return [c.message.content or "" for c in resp.choices]
    resp = await client.completions.create(prompt=prompt, **common)
    return [c.text for c in resp.choices]


async def _request_with_retries(client, cfg: EvalConfig, problem: Problem, n: int) -> list[str]:
    for attempt in range(cfg.max_retries + 1):
        try:
            texts = await _request(client, cfg, problem.prompt, n)
            if len(texts) != n:
                raise RuntimeError(f"{problem.id}: endpoint returned {len(texts)} choices, expected n={n}")
            return texts
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == cfg.max_retries or not _is_retryable(exc):
                raise RuntimeError(f"request for {problem.id} failed: {exc}") from exc
            await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


async def sample_all(cfg: EvalConfig, jobs: list[tuple[Problem, int]], cache: ResponseCache,
                     progress=None) -> list[list[str]]:
    """Texts for each ``(problem, n)`` job, from the cache or the endpoint (``cfg.concurrency`` in flight)."""
    client = make_client(cfg)
    sem = asyncio.Semaphore(cfg.concurrency)

    async def one(problem: Problem, n: int) -> list[str]:
        key = request_key(cfg, problem.prompt, n)
        if key in cache.entries:
            texts = cache.entries[key]
        else:
            async with sem:
                texts = await _request_with_retries(client, cfg, problem, n)
            cache.put(key, problem.id, texts)
        if progress is not None:
            progress.update(1)
        return texts

    try:
        return await asyncio.gather(*(one(p, n) for p, n in jobs))
    finally:
        await client.close()
