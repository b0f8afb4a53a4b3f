"""Warm start of the tiny policy: a supervised run on imperfect demonstrations, cached on disk.

RL needs a policy whose samples are sometimes right: a random tiny model never writes
``\\boxed{...}``. The warm start teaches column addition from demonstrations of which a fraction
``carry_noise`` forget every carry (noisy SFT data, as real data often is), and each column's digit fact
is off by one with probability ``fact_noise`` (0 by default: the digit facts, not only the carries, stay uncertain),
and each column's step may be preceded by ``free_letters`` letters drawn uniformly from the first ``free_alphabet``
of ``a..z`` (0 by default; the study task's: free choices of high entropy, ln(free_alphabet) nats each, that the
verifier never reads -- what "high entropy is necessary, not sufficient, for information about the reward" is
about, and what moves the group's mean entropy above the decisions, so that entropy-aware credit turns the
update instead of scaling it; issue 15). The policy learns the
procedure well but carries unreliably: the carry is a high-entropy "forking" token where it is
usually wrong, so greedy accuracy sits near the share of carry-free problems. The verifier's
reward is what tells RL which branch is right. The result is cached under
``cache_dir/<key>`` where ``key`` hashes every setting that changes it, so the default job
pays for it once per machine.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict

from core.config import TaskConfig, TinyModelConfig, WarmStartConfig
from core.locks import exclusive
from task.synthetic import sample_problems
from task.tiny_model import build_random_policy


def cache_key(spec: TinyModelConfig, task: TaskConfig, ws: WarmStartConfig, seed: int) -> str:
    task_key = {k: getattr(task, k) for k in ("digits", "heldout_fraction")}
    blob = json.dumps({"spec": asdict(spec), "task": task_key, "ws": asdict(ws), "seed": seed, "v": 1},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_start_path(cache_dir: str, spec: TinyModelConfig, task: TaskConfig, ws: WarmStartConfig, seed: int) -> str:
    """Where the warm start of these settings is (or will be) cached."""
    return os.path.join(os.path.expanduser(cache_dir), cache_key(spec, task, ws, seed))


def warm_started_policy(cache_dir: str, spec: TinyModelConfig, task: TaskConfig, ws: WarmStartConfig,
                        seed: int, log=print) -> str:
    """Path of the warm-started checkpoint, building it if it is not cached yet.

    Processes that need the same warm start at once (a study's concurrent runs of one seed sharing a
    cache) take turns on ``<path>.lock``: one builds it, the others wait and find it built."""
    path = warm_start_path(cache_dir, spec, task, ws, seed)
    if os.path.exists(os.path.join(path, "WARM_START_DONE")):
        return path
    with exclusive(path + ".lock"):
        if not os.path.exists(os.path.join(path, "WARM_START_DONE")):
            _build(path, spec, task, ws, seed, log)
    return path


def _build(path: str, spec: TinyModelConfig, task: TaskConfig, ws: WarmStartConfig, seed: int, log) -> None:
    """Train the warm start in a temporary folder, then move it to ``path`` whole (``WARM_START_DONE`` inside)."""
    import glob

    tmp = path + f".tmp{os.getpid()}"
    for stale in glob.glob(glob.escape(path) + ".tmp*"):  # builds killed before their move (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    build_random_policy(tmp, seed=seed, spec=spec)
    t0 = time.time()
    _supervised_fit(tmp, task, ws, seed, log)
    log(f"[warm start] {ws.steps} supervised steps in {time.time() - t0:.1f}s -> {path}")
    open(os.path.join(tmp, "WARM_START_DONE"), "w").close()
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _supervised_fit(path: str, task: TaskConfig, ws: WarmStartConfig, seed: int, log) -> None:
    """Next-token cross-entropy on response tokens of (prompt, reference solution) pairs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    problems = sample_problems(ws.num_examples, seed + 7, task.digits, "train", task.heldout_fraction)
    flawed, slipped, lettered = random.Random(seed + 11), random.Random(seed + 13), random.Random(seed + 17)
    examples = [_encode(tok, p.question, p.solution(drop_carries=flawed.random() < ws.carry_noise,
                                                    slips=_fact_slips(slipped, task.digits, ws.fact_noise),
                                                    free=_free_letters(lettered, task.digits, ws.free_letters,
                                                                       ws.free_alphabet)))
                for p in problems]
    opt = torch.optim.AdamW(model.parameters(), lr=ws.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_cosine(s, ws.steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(ws.steps):
        idx = torch.randint(len(examples), (ws.batch_size,), generator=gen).tolist()
        input_ids, attention, labels = _collate([examples[i] for i in idx], tok.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == ws.steps - 1:
            log(f"[warm start] step {step} loss {loss.item():.4f}")
    model.save_pretrained(path, safe_serialization=True)


def _fact_slips(rng: random.Random, digits: int, fact_noise: float) -> tuple[int, ...]:
    """Per column: ±1 with probability ``fact_noise`` (a misremembered digit fact), else 0. With 0 no draw is
    made, so the other demonstrations are those of a run without the key."""
    if not fact_noise:
        return ()
    return tuple(rng.choice((-1, 1)) if rng.random() < fact_noise else 0 for _ in range(digits))


def _free_letters(rng: random.Random, digits: int, letters: int, alphabet: int) -> tuple[str, ...]:
    """Per column: ``letters`` letters drawn uniformly from the first ``alphabet`` of ``a..z``, written before the
    column's step (reward-irrelevant). With ``letters`` 0 no draw is made: the other demonstrations stay as they were."""
    if not letters:
        return ()
    pool = "abcdefghijklmnopqrstuvwxyz"[:alphabet]
    return tuple("".join(rng.choice(pool) for _ in range(letters)) for _ in range(digits))


def _warmup_cosine(step: int, total: int, warmup: int = 50) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _encode(tok, question: str, solution: str) -> tuple[list[int], int]:
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                     add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    r_ids = tok(solution, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return p_ids + r_ids, len(p_ids)


def _collate(batch: list[tuple[list[int], int]], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside responses), [B, L]."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, n_prompt: len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, attention, labels
