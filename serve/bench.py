"""Benchmark: endpoint throughput, 16 concurrent clients vs sequential requests (verifier: evaluation.bench).

    python -m serve.bench                       # builds a tiny checkpoint, serves it locally
    python -m serve.bench endpoint=http://host:8000 model=<id> [api_key=...]
"""
from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, fields


@dataclass
class BenchConfig:
    endpoint: str | None = None
    model: str = "tiny"
    api_key: str | None = None
    clients: int = 16
    requests: int = 32
    max_tokens: int = 64


async def _run_clients(client, cfg: BenchConfig, concurrency: int, requests: int) -> tuple[float, int]:
    sem, tokens = asyncio.Semaphore(concurrency), 0

    async def one(i: int):
        nonlocal tokens
        async with sem:
            r = await client.completions.create(model=cfg.model, prompt=f"Problem {i}: 3+4=", max_tokens=cfg.max_tokens,
                                                temperature=0.6, top_p=0.95, extra_body={"ignore_eos": True})
            tokens += r.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return time.perf_counter() - start, tokens


def bench_endpoint(url: str, cfg: BenchConfig) -> dict:
    """Requests/s and tokens/s, sequential and with ``cfg.clients`` concurrent clients, and their ratio."""
    import openai

    async def main():
        async with openai.AsyncOpenAI(base_url=url.rstrip("/") + "/v1", api_key=cfg.api_key or "EMPTY",
                                      timeout=600, max_retries=0) as client:
            await _run_clients(client, cfg, 1, 2)  # warm-up
            return await _run_clients(client, cfg, 1, cfg.requests), \
                await _run_clients(client, cfg, cfg.clients, cfg.requests)

    (seq_t, seq_tok), (par_t, par_tok) = asyncio.run(main())
    out = {"sequential_req_s": cfg.requests / seq_t, "sequential_tok_s": seq_tok / seq_t,
           "concurrent_req_s": cfg.requests / par_t, "concurrent_tok_s": par_tok / par_t}
    return {**out, "ratio": out["concurrent_req_s"] / out["sequential_req_s"]}


def main(argv: list[str]) -> None:
    cfg = BenchConfig()
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in {f.name for f in fields(cfg)}:
            raise SystemExit(f"serve.bench: unknown option {key!r} (known: {[f.name for f in fields(cfg)]})")
        setattr(cfg, key, int(value) if isinstance(getattr(cfg, key), int) else value)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = cfg.endpoint
    if url is None:
        import ray
        from ray import serve

        from task.tiny_model import build_random_policy
        from serve.run import start
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        ckpt = build_random_policy(tempfile.mkdtemp(prefix="bench-ckpt-"), seed=0)
    try:
        url = url or start({"checkpoint": ckpt, "model_name": cfg.model, "port": 8321})
        ep = bench_endpoint(url, cfg)
        print(f"endpoint ({cfg.requests} requests x {cfg.max_tokens} tokens, model {cfg.model}):")
        print(f"  sequential : {ep['sequential_req_s']:.2f} req/s, {ep['sequential_tok_s']:.0f} tok/s")
        print(f"  {cfg.clients} clients : {ep['concurrent_req_s']:.2f} req/s, {ep['concurrent_tok_s']:.0f} tok/s")
        print(f"  ratio      : {ep['ratio']:.2f}x (target >= 3x)", flush=True)
    finally:
        if cfg.endpoint is None:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
