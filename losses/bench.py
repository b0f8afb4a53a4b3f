"""Benchmark: forward+backward of log-probs + entropies, naive [T, V] logits vs chunked recompute.

    python -m losses.bench [--tokens T] [--hidden H] [--vocab V] [--chunk C] [--device auto|cpu|cuda]

Each path runs in its own subprocess. CPU: float32, peak memory = ru_maxrss − ru_maxrss after the
inputs are allocated. CUDA (default T = 16,384, bf16): torch.cuda.max_memory_allocated − allocated
inputs, one warm-up iteration. Prints one JSON line with both times, peaks and their ratios.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from .entropy import logprobs_and_entropy, naive_logprobs_and_entropy


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _inputs(args, device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.empty(args.tokens, args.hidden, dtype=dtype, device=device)
    weight = torch.empty(args.vocab, args.hidden, dtype=dtype, device=device)
    hidden.copy_(torch.randn(args.tokens, args.hidden, generator=gen))
    for s in range(0, args.vocab, 8192):  # chunked init: no transient full-size temporary
        e = min(s + 8192, args.vocab)
        weight[s:e].copy_(torch.randn(e - s, args.hidden, generator=gen) * 0.02)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=gen).to(device)
    g_lp = torch.randn(args.tokens, generator=gen).to(device)
    g_ent = torch.randn(args.tokens, generator=gen).to(device)
    return hidden.requires_grad_(), weight.requires_grad_(), labels, g_lp, g_ent


def _step(mode, hidden, weight, labels, g_lp, g_ent, chunk):
    if mode == "naive":
        logp, ent = naive_logprobs_and_entropy(hidden, weight, labels)
    else:
        logp, ent = logprobs_and_entropy(hidden, weight, labels, chunk_size=chunk)
    ((logp * g_lp).sum() + (ent * g_ent).sum()).backward()
    hidden.grad = weight.grad = None


def run_child(args) -> dict:
    """Time one path in this process and measure its peak memory above the inputs."""
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    tensors = _inputs(args, args.device, dtype)
    if cuda:
        _step(args.child, *tensors, args.chunk)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        w_small = tensors[1][:64].detach().requires_grad_()  # warm-up without a full-size grad
        _step(args.child, tensors[0][:8].detach().requires_grad_(), w_small, tensors[2][:8] % 64,
              tensors[3][:8], tensors[4][:8], args.chunk)
        base = _rss_mb()
    start = time.perf_counter()
    _step(args.child, *tensors, args.chunk)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _rss_mb() - base
    return {"time_s": elapsed, "peak_mb": peak, "dtype": str(dtype).replace("torch.", "")}


def _spawn(mode, args) -> dict:
    cmd = [sys.executable, "-m", "losses.bench", "--child", mode, "--device", args.device, "--tokens",
           str(args.tokens), "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--chunk", str(args.chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=None, help="T (default 4096 CPU, 16384 CUDA)")
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--chunk", type=int, default=512, help="tokens per chunk in the chunked path")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--child", choices=("naive", "chunked"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tokens is None:
        args.tokens = 16_384 if args.device == "cuda" else 4096
    if args.child:
        result = run_child(args)
    else:
        naive, chunked = _spawn("naive", args), _spawn("chunked", args)
        result = {"device": args.device, "dtype": naive["dtype"], "tokens": args.tokens, "hidden": args.hidden,
                  "vocab": args.vocab, "chunk": args.chunk,
                  "naive_time_s": round(naive["time_s"], 4), "chunked_time_s": round(chunked["time_s"], 4),
                  "naive_peak_mb": round(naive["peak_mb"], 1), "chunked_peak_mb": round(chunked["peak_mb"], 1),
                  "time_ratio": round(chunked["time_s"] / naive["time_s"], 4),
                  "mem_ratio": round(chunked["peak_mb"] / max(naive["peak_mb"], 1e-9), 4)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
