"""pipeline.bench's figures and its in-run baseline (quick: no Ray, vLLM or DeepSpeed).

The summary is a pure function of metrics rows; the baseline loop runs for real on a small random tiny policy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.bench_summary import nothing_trained, ratio_to_baseline, summarise, summarise_baseline


def row(step_s: float, trained: float, generated: float = 100.0, extra_rounds: float = 0.0) -> dict:
    """A metrics.jsonl row of one step, stage times summing to 0.9 of ``step_s``."""
    return {"timing/rollout_s": 0.4 * step_s, "timing/reward_s": 0.1 * step_s, "timing/train_s": 0.3 * step_s,
            "timing/weight_sync_s": 0.1 * step_s, "timing/step_s": step_s, "rollout/weight_version_lag": 0.0,
            "rollout/tokens_generated": generated, "train/tokens_trained": trained,
            "train/no_signal": float(trained == 0), "dynamic_sampling/kept_groups": 16.0,
            "dynamic_sampling/extra_rounds": extra_rounds}


def test_a_step_that_trained_nothing_is_left_out_of_every_figure():
    rows = [row(9.0, 50)] + [row(1.0, 40), row(1.2, 60), row(50.0, 0, generated=900, extra_rounds=3), row(1.4, 80)]
    s = summarise(rows, staleness=0, warmup=1)
    assert (s["steady_steps"], s["counted_steps"], s["no_signal_steps"]) == (4, 3, 1)
    assert s["median_s"]["step_s"] == 1.2  # the 50 s step that trained nothing is not in the median
    assert s["tokens_trained"] == {"median": 60, "total": 180} and s["tokens_generated"]["total"] == 300
    assert s["rollout_rounds"] == {"median": 1, "max": 1} and s["groups_kept"]["total"] == 48
    assert s["gen_tokens_per_s"] == round(300 / (0.4 * 3.6), 1) and s["train_tokens_per_s"] == round(180 / (0.3 * 3.6), 1)
    assert s["overhead_share"] == pytest.approx(0.1) and s["ratio"] == pytest.approx(1 / 0.9, abs=1e-4)


def test_the_ratio_to_the_baseline_is_of_the_two_median_steps():
    setting = summarise([row(2.0, 10), row(3.0, 10), row(100.0, 10)], staleness=1, warmup=0)  # median 3.0
    baseline = summarise_baseline([row(0.5, 10), row(1.5, 10), row(1.0, 10), row(9.0, 0)], warmup=0, threads=2)
    assert baseline["median_s"]["step_s"] == 1.0 and baseline["no_signal_steps"] == 1
    assert ratio_to_baseline(setting, baseline) == 3.0


def test_no_counted_step_gives_no_figures_and_the_failure_message():
    s = summarise([row(1.0, 0), row(1.0, 0), row(1.0, 0)], staleness=0, warmup=1)
    assert s == {"setting": "pipeline", "staleness": 0, "steady_steps": 2, "counted_steps": 0, "no_signal_steps": 2}
    base = summarise_baseline([row(1.0, 5), row(1.0, 5)], warmup=1, threads=2)
    assert ratio_to_baseline(s, base) is None
    assert nothing_trained([base]) is None
    message = nothing_trained([base, s])
    assert "staleness=0 trained a token" in message and "rollout.max_tokens" in message


# ---- the baseline loop -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from transformers import AutoTokenizer

    from task.tiny_model import build_random_policy, tiny_spec

    path = build_random_policy(str(tmp_path_factory.mktemp("bench") / "ckpt"), seed=0,
                               spec=tiny_spec(hidden_size=32, num_layers=1, intermediate_size=32))
    return path, AutoTokenizer.from_pretrained(path)


def small_cfg(**extra):
    from pipeline.config import compose

    overrides = {"rollout.n": 2, "rollout.max_tokens": 6, "trainer.prompts_per_step": 4, "rollout.num_actors": 2,
                 "trainer.lr": 0.05, **extra}
    return compose(*(f"{k}={v}" for k, v in overrides.items()))


def table_of(tokenizer, count: int) -> dict:
    return {"uid": [str(i) for i in range(count)], "gold": [str(i + 1) for i in range(count)],
            "prompt_ids": [tokenizer(f"What is {i}+1?")["input_ids"] for i in range(count)]}


def test_the_baseline_takes_the_pipelines_prompts_of_each_step(policy):
    from pipeline.bench_baseline import step_prompts
    from pipeline.data import ShardPrompts

    cfg, table = small_cfg(), table_of(policy[1], 10)
    shards = ShardPrompts(table, 2, 2, cfg.seed, cfg.data.shuffle)({"id": np.arange(6)})["payload"]  # 2 actors
    for step in range(3):
        ids, golds = step_prompts(cfg, table, step)
        assert ids == shards[2 * step].prompt_ids + shards[2 * step + 1].prompt_ids
        assert golds == shards[2 * step].golds + shards[2 * step + 1].golds


def test_response_mask_ends_at_the_first_eos():
    from pipeline.bench_baseline import left_pad, response_mask

    mask = response_mask(torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [0, 3, 3, 3, 3]]), eos_ids=[0, 2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    ids, attention = left_pad([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]] and attention.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_one_baseline_step_generates_scores_and_steps_the_optimizer(policy):
    from pipeline.bench_baseline import BaselineLoop, step_prompts

    cfg, table = small_cfg(**{"algorithm.overlong_buffer": 0}), table_of(policy[1], 8)
    loop = BaselineLoop(cfg, policy[0], policy[1])
    r = loop.step(0, *step_prompts(cfg, table, 0))
    assert 0 < r["rollout/tokens_generated"] <= 4 * 2 * 6  # prompts x n x max_tokens
    assert all(r[f"timing/{k}"] > 0 for k in ("rollout_s", "reward_s", "train_s"))
    assert r["timing/step_s"] == pytest.approx(r["timing/rollout_s"] + r["timing/reward_s"] + r["timing/train_s"])
    # a random policy answers nothing right and no length shaping: every group's rewards are equal, no signal
    assert r["train/tokens_trained"] == 0 and r["train/no_signal"] == 1.0 and r["loss"] == 0.0
    first = next(loop.model.parameters())
    assert float(loop.optimizer.state[first]["step"]) == 1  # one AdamW step per baseline step, signal or not


def test_the_policy_gradient_step_raises_a_rewarded_response_and_lowers_a_punished_one(policy):
    from pipeline.bench_baseline import pg_loss

    cfg = small_cfg()
    from actors.train_worker import load_policy

    model = load_policy(cfg, policy[0])
    ids = torch.tensor([[0, 11, 12, 13, 14], [0, 11, 21, 22, 23]])  # one prompt column, four response tokens
    attention, mask = torch.ones_like(ids), torch.ones(2, 4, dtype=torch.long)
    responses, adv = ids[:, 1:], torch.tensor([1.0, -1.0])

    def logp():
        with torch.no_grad():
            return [float(-pg_loss(model, ids[i:i + 1], attention[i:i + 1], 1, responses[i:i + 1], mask[i:i + 1],
                                   torch.ones(1), 1.0)) for i in range(2)]

    first = logp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    pg_loss(model, ids, attention, 1, responses, mask, adv, 1.0).backward()
    optimizer.step()
    after = logp()
    assert after[0] > first[0] and after[1] < first[1]
