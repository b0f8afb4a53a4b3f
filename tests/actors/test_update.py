"""The policy update with a real (single-process, gloo) DeepSpeed engine on a tiny model.

The fused path (one forward per micro-batch, ratio denominator = detached current log-prob, credit
from that forward's entropies) must apply the same update as the separate path (old-policy pass,
batch-wide credit), for group-local algorithms; the IS correction must scale token losses exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from actors import update as U
from losses import build_algorithm
from core.batch import RolloutShard, collate
from pipeline.config import Config, compose

G, PROMPTS = 4, 4


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from task.tiny_model import build_random_policy, tiny_spec

    path = tmp_path_factory.mktemp("policy")
    spec = tiny_spec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    return build_random_policy(str(path), seed=0, spec=spec)


@pytest.fixture(scope="module", autouse=True)
def process_group(tmp_path_factory):
    if not dist.is_initialized():
        init = tmp_path_factory.mktemp("pg") / "init"
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    yield


def make_batch(seed: int, equal_rewards: bool = False, equal_groups: int = 1):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(5, 200, size=int(rng.integers(3, 7)))) for _ in range(PROMPTS)]
    responses = [list(rng.integers(5, 200, size=int(rng.integers(2, 9)))) for _ in range(PROMPTS * G)]
    rewards = rng.integers(0, 2, size=PROMPTS * G).astype(np.float32)
    rewards[:G * equal_groups] = 1.0  # the first groups all-equal (A = 0)
    if equal_rewards:  # every group all-equal: every advantage is 0
        rewards[:] = 1.0
    algo = build_algorithm({"name": "eapo"})
    adv = algo.compute_advantages(torch.from_numpy(rewards), torch.arange(PROMPTS * G) // G).numpy()
    shard = RolloutShard(step=0, shard=0, group_size=G, prompt_ids=prompts, golds=["0"] * PROMPTS,
                         response_ids=responses, response_texts=[""] * len(responses),
                         behaviour_logprobs=[list(-6.2 + 0.7 * rng.standard_normal(len(r))) for r in responses],
                         truncated=[False] * len(responses), weight_version=0, rewards=rewards, advantages=adv)
    return collate([shard], pad_id=0)


def config(**trainer) -> Config:
    cfg = compose()
    cfg.rollout = dataclasses.replace(cfg.rollout, n=G, temperature=1.0, max_tokens=8, staleness=0)
    settings = dict(lr=1e-3, micro_batch_size=8, prompts_per_step=PROMPTS, mini_batches_per_step=1,
                    epochs_per_step=1, is_correction=False)
    cfg.trainer = dataclasses.replace(cfg.trainer, **{**settings, **trainer})
    return cfg


def engine_for(cfg, policy, micro, accum):
    from actors.train_worker import build_engine

    return build_engine(cfg, policy, micro, accum)


def params(engine):
    return {k: v.detach().clone() for k, v in engine.module.named_parameters()}


@pytest.mark.parametrize("algo_name", ["eapo", "dapo", "quadrant_phr", "a3po", "entroreg"])
def test_fused_update_equals_separate_update(policy, algo_name):
    cfg = config()
    batch = make_batch(1)
    results = {}
    for path in ("fused", "separate"):
        torch.manual_seed(0)
        engine = engine_for(cfg, policy, 8, 2)
        algo = build_algorithm({"name": algo_name})
        algo.begin_step(0, 10)
        fn = U.fused_update if path == "fused" else U.separate_update
        res = fn(engine, algo, batch, cfg, 1, 8)
        results[path] = (res, params(engine))
    (fused, p_fused), (sep, p_sep) = results["fused"], results["separate"]
    assert U.fused(cfg, build_algorithm({"name": algo_name}), 8)
    torch.testing.assert_close(fused.old_logprobs, sep.old_logprobs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.entropy, sep.entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.credit.advantages, sep.credit.advantages, rtol=1e-5, atol=1e-6)
    moved = max(float((p_fused[k] - p0).abs().max()) for k, p0 in params(engine_for(cfg, policy, 8, 2)).items())
    assert moved > 1e-5  # the step did something
    for k in p_fused:
        torch.testing.assert_close(p_fused[k], p_sep[k], rtol=1e-4, atol=1e-6)
    assert fused.stats["grad_norm"] == pytest.approx(sep.stats["grad_norm"], rel=1e-4)


def optimizer_state(engine) -> dict:
    return {(i, k): v.detach().clone() if torch.is_tensor(v) else v
            for i, state in enumerate(engine.basic_optimizer.state.values()) for k, v in state.items()}


def weights(engine) -> dict:
    from actors.weights import full_state_dict

    return {k: v.detach().clone() for k, v in full_state_dict(engine).items()}  # ZeRO-3: gathered


@pytest.mark.parametrize("path,stage", [("fused", 0), ("fused", 2), ("separate", 3)])
def test_a_step_without_signal_moves_nothing_and_the_next_step_is_as_if_it_never_happened(policy, path, stage):
    """Issue 15: with every advantage 0, AdamW would still step (its momentum from the step before moves the
    weights). The step is skipped: weights and optimizer state (moments, step count) stay exactly, DeepSpeed's
    accumulation counter stays on its boundaries (2 micro-batches per optimizer step here), and the next step
    with signal gives the same weights as on an engine that never saw the empty one; under ZeRO too, whose
    optimizer wraps the AdamW that is skipped."""
    fn = U.fused_update if path == "fused" else U.separate_update
    cfg, algo = config(zero_stage=stage), build_algorithm({"name": "dapo"})
    first, empty, last = make_batch(1), make_batch(3, equal_rewards=True), make_batch(5)
    engine = engine_for(cfg, policy, 8, 2)
    assert fn(engine, algo, first, cfg, 1, 8).stats["train/no_signal"] == 0.0
    before, state = weights(engine), optimizer_state(engine)
    assert state and any(float(v.abs().max()) > 0 for (_, k), v in state.items() if k == "exp_avg")  # momentum
    res = fn(engine, algo, empty, cfg, 1, 8)
    assert res.stats["train/no_signal"] == 1.0 and res.stats["train/tokens_trained"] == 0.0
    assert res.stats["train/skipped_optimizer_steps"] == 1.0
    for k, v in weights(engine).items():
        assert torch.equal(v, before[k]), k
    after = optimizer_state(engine)
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v
                                                for k, v in state.items())
    assert engine.basic_optimizer.step.__func__ is torch.optim.AdamW.step  # the real step is back
    fn(engine, algo, last, cfg, 1, 8)
    reference = engine_for(cfg, policy, 8, 2)
    fn(reference, algo, first, cfg, 1, 8)
    fn(reference, algo, last, cfg, 1, 8)
    expected = weights(reference)
    for k, v in weights(engine).items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)


def test_signal_is_counted_per_token_and_an_empty_mini_batch_alone_is_skipped(policy):
    cfg, algo = config(mini_batches_per_step=2), build_algorithm({"name": "dapo"})
    batch = make_batch(7, equal_groups=2)  # mini-batch 1 = groups 0-1 (no signal), mini-batch 2 = groups 2-3
    assert float(batch.advantages[:2 * G].abs().max()) == 0 and float(batch.advantages[2 * G:].abs().max()) > 0
    res = U.separate_update(engine_for(cfg, policy, 8, 1), algo, batch, cfg, 1, 8)
    with_signal = float((batch.response_mask[2 * G:] * (batch.advantages[2 * G:, None] != 0)).sum())
    assert res.stats["train/tokens_trained"] == with_signal > 0
    assert res.stats["train/no_signal"] == 0.0 and res.stats["train/skipped_optimizer_steps"] == 1.0


def test_fused_path_is_refused_where_it_would_change_the_gradient():
    assert not U.fused(config(mini_batches_per_step=2), build_algorithm({"name": "eapo"}), 8)
    assert not U.fused(config(epochs_per_step=2), build_algorithm({"name": "eapo"}), 8)
    assert not U.fused(config(), build_algorithm({"name": "forking"}), 8)  # batch-wide threshold
    assert not U.fused(config(), build_algorithm({"name": "eapo"}), 6)  # micro-batches would split groups


def test_is_correction_scales_each_tokens_loss(policy):
    """With IS on, the update equals the update without IS on a batch whose credit is pre-multiplied by w."""
    cfg_on, cfg_off = config(is_correction=True, is_cap=1.5), config()
    batch = make_batch(2)
    algo = build_algorithm({"name": "dapo"})
    engine = engine_for(cfg_on, policy, 8, 2)
    res_on = U.separate_update(engine, algo, batch, cfg_on, 1, 8)
    p_on = params(engine)
    w, metrics = U.truncated_is_weights(res_on.old_logprobs, batch.behaviour_logprobs, batch.response_mask, 1.5)
    assert 0 < metrics["is/clipped_share"] < 1 and res_on.stats["is/clipped_share"] == pytest.approx(
        metrics["is/clipped_share"], abs=0.2)

    class Weighted(type(algo)):
        def token_weights(self, advantages, entropy, old_logprobs, mask, group_ids):
            return w

    weighted = Weighted(copy.deepcopy(algo.config))
    engine = engine_for(cfg_off, policy, 8, 2)
    U.separate_update(engine, weighted, batch, cfg_off, 1, 8)
    p_ref = params(engine)
    for k in p_on:
        torch.testing.assert_close(p_on[k], p_ref[k], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def reference_policy(tmp_path_factory):
    """Another tiny policy (other seed) as the KL reference, so KL(π ‖ π_ref) is far from 0."""
    from task.tiny_model import build_random_policy, tiny_spec

    path = tmp_path_factory.mktemp("reference")
    spec = tiny_spec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    return build_random_policy(str(path), seed=1, spec=spec)


def kl_reference_float64(policy_path, reference_path, batch, beta):
    """β·KL_k3 token-mean over the batch's response tokens and the norm of its gradient, in float64."""
    from transformers import AutoModelForCausalLM

    pol = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float64)
    ref = AutoModelForCausalLM.from_pretrained(reference_path, dtype=torch.float64)

    def token_logprobs(model):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        return torch.log_softmax(logits, -1).gather(-1, batch.labels[..., None])[..., 0]

    with torch.no_grad():
        ref_lp = token_logprobs(ref)
    log_r = ref_lp - token_logprobs(pol)
    mask = batch.response_mask.bool()
    kl = ((torch.expm1(log_r) - log_r) * mask).sum() / mask.sum()
    grads = torch.autograd.grad(beta * kl, [p for p in pol.parameters() if p.requires_grad], allow_unused=True)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None]))
    return float(kl), float(norm)


@pytest.mark.parametrize("path", ["fused", "separate"])
def test_kl_term_matches_a_float64_reference(policy, reference_policy, path):
    """With all advantages 0 the step's loss is β·KL(π ‖ π_ref) alone: its value and gradient norm equal
    a float64 computation from the two checkpoints (k3 estimator, token-mean)."""
    from actors.train_worker import build_reference

    beta = 0.5
    cfg = config()
    cfg.algorithm = build_algorithm({"name": "dapo", "kl_coef": beta, "kl_estimator": "k3"}).config
    batch = make_batch(3, equal_rewards=True)
    assert float(batch.advantages.abs().max()) == 0.0
    algo = build_algorithm(cfg.algorithm)
    reference = build_reference(cfg, reference_policy, torch.device("cpu"))
    assert not any(p.requires_grad for p in reference.parameters())
    engine = engine_for(cfg, policy, 8, 2)
    fn = U.fused_update if path == "fused" else U.separate_update
    res = fn(engine, algo, batch, cfg, 1, 8, reference)
    kl, grad_norm = kl_reference_float64(policy, reference_policy, batch, beta)
    assert kl > 1e-3  # two random initialisations: small, but far from 0 in float32
    micro_batches = batch.size // 8
    assert res.stats["kl_loss"] * micro_batches == pytest.approx(kl, rel=1e-4)  # additive shares of J_KL
    assert res.stats["grad_norm"] == pytest.approx(grad_norm, rel=1e-3)


def test_kl_reference_is_built_only_for_a_kl_term(policy):
    from actors.train_worker import build_reference

    cfg = config()
    assert cfg.algorithm.kl_coef == 0 and build_reference(cfg, policy, torch.device("cpu")) is None
    algo = build_algorithm({"name": "dapo", "kl_coef": 0.1})
    engine = engine_for(cfg, policy, 8, 2)
    with pytest.raises(ValueError, match="^kl_coef: 0.1 > 0 needs ref_logprobs"):
        U.separate_update(engine, algo, make_batch(4), cfg, 1, 8)


@pytest.mark.parametrize("path", ["fused", "separate"])
def test_the_manipulation_checks_measure_without_changing_the_update(policy, path):
    """trainer.grad_check_every: the exact shaped-vs-plain cosine is logged (1 for DAPO's identity credit, < 1 for
    EAPO's entropy weights, equal on both paths) and the update is the same as without the check."""
    cfg = config()
    fn = U.fused_update if path == "fused" else U.separate_update
    out = {}
    for name, check in (("dapo", True), ("eapo", True), ("eapo", False)):
        torch.manual_seed(0)
        engine = engine_for(cfg, policy, 8, 2)
        algo = build_algorithm({"name": name, **({"alpha": 0.9, "phi": 1.0} if name == "eapo" else {})})
        res = fn(engine, algo, make_batch(1), cfg, 1, 8, check=check)
        out[name, check] = (res.stats, params(engine))
    assert out["dapo", True][0]["grad/cos_shaped_plain"] == pytest.approx(1.0, abs=1e-6)
    cos = out["eapo", True][0]["grad/cos_shaped_plain"]
    assert 0.0 < cos < 0.9999
    assert sum(out["eapo", True][0][f"quadrant/{q}/grad_share"] for q in ("PHR", "PLR", "NLR", "NHR")) == \
        pytest.approx(1.0)
    assert "grad/cos_shaped_plain" not in out["eapo", False][0]
    for k, v in out["eapo", False][1].items():
        torch.testing.assert_close(out["eapo", True][1][k], v, rtol=0, atol=0)
