"""Benchmark: endpoint throughput (16 concurrent clients vs sequential) and verifier throughput.

    python -m serve.bench                       # builds a tiny checkpoint, starts Serve locally
    python -m serve.bench endpoint=http://host:8000 model=<id> [api_key=...]

Prints requests/s and generated tokens/s for sequential and concurrent clients and their ratio,
then the verifier's responses/s in one process and across a pool of Ray actors.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class BenchConfig:
    endpoint: str | None = None
    model: str = "tiny"
    api_key: str | None = None
    clients: int = 16
    requests: int = 32
    max_tokens: int = 64
    verifier_responses: int = 2000
    ray_actors: int = 2


def _parse_args(argv: list[str]) -> BenchConfig:
    cfg = BenchConfig()
    for arg in argv:
        key, _, value = arg.partition("=")
        if not hasattr(cfg, key):
            raise SystemExit(f"serve.bench: unknown option {key!r} (known: {list(cfg.__dict__)})")
        default = getattr(BenchConfig, key, None)
        setattr(cfg, key, int(value) if isinstance(default, int) else value)
    return cfg


async def _run_clients(client, cfg: BenchConfig, concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(i: int):
        nonlocal tokens
        async with sem:
            r = await client.completions.create(model=cfg.model, prompt=f"Problem {i}: 3+4=", max_tokens=cfg.max_tokens,
                                                temperature=0.6, top_p=0.95, extra_body={"ignore_eos": True})
            tokens += r.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(cfg.requests)))
    return time.perf_counter() - start, tokens


def bench_endpoint(url: str, cfg: BenchConfig) -> dict:
    """Sequential vs ``cfg.clients`` concurrent clients on the same request mix."""
    import openai

    client = openai.AsyncOpenAI(base_url=url.rstrip("/") + "/v1", api_key=cfg.api_key or "EMPTY", timeout=600)

    async def main():
        await _run_clients(client, BenchConfig(**{**cfg.__dict__, "requests": 2}), 1)  # warm-up / model load
        seq = await _run_clients(client, cfg, 1)
        par = await _run_clients(client, cfg, cfg.clients)
        await client.close()
        return seq, par

    (seq_t, seq_tok), (par_t, par_tok) = asyncio.run(main())
    out = {"sequential_req_s": cfg.requests / seq_t, "sequential_tok_s": seq_tok / seq_t,
           "concurrent_req_s": cfg.requests / par_t, "concurrent_tok_s": par_tok / par_t}
    out["ratio"] = out["concurrent_req_s"] / out["sequential_req_s"]
    return out


def _verifier_workload(n: int) -> tuple[list[str], list[str]]:
    """Reference MATH500/Minerva/OlympiadBench responses (own and other problem's), cycled to ``n``."""
    from evaluation.benchmarks import load_benchmark

    responses, golds = [], []
    for name in ("math500", "minerva_math", "olympiadbench"):
        probs = load_benchmark(name)
        for i, p in enumerate(probs):
            other = probs[(i + 1) % len(probs)]
            for sol in (p.solution, other.solution):
                sol = sol or ""
                responses.append(sol if "\\boxed" in sol else sol + f"\nThe final answer is $\\boxed{{{p.gold}}}$.")
                golds.append(p.gold)
    return (responses * (n // len(responses) + 1))[:n], (golds * (n // len(golds) + 1))[:n]


def bench_verifier(cfg: BenchConfig) -> dict:
    """Responses/s of ``verify_batch`` in this process and across ``cfg.ray_actors`` Ray actors (cache off)."""
    import ray

    from evaluation import verifier

    responses, golds = _verifier_workload(cfg.verifier_responses)
    verifier.verify_batch(responses[:8], golds[:8])  # start the worker pool
    verifier.clear_cache()
    start = time.perf_counter()
    verifier.verify_batch(responses, golds)
    local = len(responses) / (time.perf_counter() - start)

    @ray.remote(num_cpus=0.5)
    class Judge:
        def run(self, rs, gs):
            from evaluation.verifier import clear_cache, verify_batch
            clear_cache()
            return len(verify_batch(rs, gs))

    actors = [Judge.remote() for _ in range(cfg.ray_actors)]
    ray.get([a.run.remote(responses[:8], golds[:8]) for a in actors])  # warm-up
    chunk = (len(responses) + len(actors) - 1) // len(actors)
    start = time.perf_counter()
    ray.get([a.run.remote(responses[i * chunk:(i + 1) * chunk], golds[i * chunk:(i + 1) * chunk])
             for i, a in enumerate(actors)])
    pooled = len(responses) / (time.perf_counter() - start)
    return {"verifier_local_resp_s": local, "verifier_ray_pool_resp_s": pooled}


def main(argv: list[str]) -> None:
    cfg = _parse_args(argv)
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        url = cfg.endpoint
        if url is None:
            from pipeline.tiny_model import build_random_policy

            from serve.run import start
            ckpt = build_random_policy(tempfile.mkdtemp(prefix="bench-ckpt-"), seed=0)
            url = start({"checkpoint": ckpt, "model_name": cfg.model, "port": 8321})
        ep = bench_endpoint(url, cfg)
        print(f"endpoint ({cfg.requests} requests x {cfg.max_tokens} tokens, model {cfg.model}):")
        print(f"  sequential : {ep['sequential_req_s']:.2f} req/s, {ep['sequential_tok_s']:.0f} tok/s")
        print(f"  {cfg.clients} clients : {ep['concurrent_req_s']:.2f} req/s, {ep['concurrent_tok_s']:.0f} tok/s")
        print(f"  ratio      : {ep['ratio']:.2f}x (target >= 3x)", flush=True)
        vb = bench_verifier(cfg)
        print(f"verifier ({cfg.verifier_responses} reference responses, cache off):")
        print(f"  one process : {vb['verifier_local_resp_s']:.0f} responses/s")
        print(f"  Ray pool ({cfg.ray_actors} actors): {vb['verifier_ray_pool_resp_s']:.0f} responses/s")
    finally:
        from ray import serve
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
