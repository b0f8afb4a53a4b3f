"""Benchmark: verifier throughput on reference responses, in one process and across a pool of Ray actors.

    python -m evaluation.bench [responses=2000] [ray_actors=2]
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass


@dataclass
class BenchConfig:
    verifier_responses: int = 2000
    ray_actors: int = 2


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
    cfg = BenchConfig()
    names = {"responses": "verifier_responses", "ray_actors": "ray_actors"}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in names:
            raise SystemExit(f"evaluation.bench: unknown option {key!r} (known: {sorted(names)})")
        setattr(cfg, names[key], int(value))
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        vb = bench_verifier(cfg)
    finally:
        ray.shutdown()
    print(f"verifier ({cfg.verifier_responses} reference responses, cache off):")
    print(f"  one process : {vb['verifier_local_resp_s']:.0f} responses/s")
    print(f"  Ray pool ({cfg.ray_actors} actors): {vb['verifier_ray_pool_resp_s']:.0f} responses/s")


if __name__ == "__main__":
    main(sys.argv[1:])
