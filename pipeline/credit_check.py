"""The study's gate, before any RL: does the algorithm's credit change the policy-gradient *direction* on this
task's initial policy? (Issue 15: a study can only see entropy-aware credit where it turns the update.)

    python -m pipeline.credit_check algorithm=eapo_strong [job overrides, e.g. preset=study]

On the job's initial policy (the tiny model's warm start, built if not cached) and ``credit_check.prompts`` of
its training prompts (synthetic task), it samples ``rollout.n`` responses per prompt with Hugging Face
``generate`` at the rollout's temperature/top-p/max_tokens (seeded), scores them with the verifier, computes the
algorithm's group advantages and credit, and measures by autograd on the whole sample (``losses.grad_checks``):
the cosine between the shaped and the plain-advantage policy gradient, their norm ratio, each quadrant's share
of the squared gradient norm, and the entropy profile (share of tokens above 0.1 nats, share of the signed
tokens whose EAPO-style weight sits at its cap). One JSON line on stdout (also written to
``credit_check.out``); exit code 0 when the cosine is at most ``credit_check.max_cosine`` (PASS), 1 otherwise.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from core.cli import app, fail
from core.config_files import CONFIG_DIR
from core.typed import ConfigError
from pipeline import config as config_mod


def sample_groups(model, tok, problems, cfg, seed: int):
    """(prompt_ids [P], response_ids [P*G], texts [P*G], truncated [P*G]): G = rollout.n samples per prompt."""
    r = cfg.rollout
    prompts, responses, texts, truncated = [], [], [], []
    torch.manual_seed(seed)
    for p in problems:
        text = tok.apply_chat_template([{"role": "user", "content": p.question + cfg.data.prompt_suffix}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False).input_ids
        prompts.append(ids)
        inp = torch.tensor([ids] * r.n)
        with torch.no_grad():
            out = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=True, temperature=r.temperature,
                                 top_p=r.top_p, top_k=0, max_new_tokens=r.max_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        for row in out[:, len(ids):].tolist():
            end = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            responses.append(row[:end])
            texts.append(tok.decode(row[:end], skip_special_tokens=True))
            truncated.append(tok.eos_token_id not in row)
    return prompts, responses, texts, truncated


def training_batch(cfg, prompts, problems, responses, texts, truncated, pad_id):
    """The sample as the trainer sees it (core.batch.TrainBatch) with the algorithm's rewards and advantages."""
    from actors.reward import Scorer
    from core.batch import RolloutShard, collate

    golds = [str(p.answer) for p in problems]
    g = cfg.rollout.n
    scorer = Scorer(cfg)
    rewards, correct, _ = scorer.score(texts, [x for x in golds for _ in range(g)], [len(x) for x in responses])
    adv = scorer.algo.compute_advantages(torch.from_numpy(rewards.astype(np.float64)),
                                         torch.arange(len(texts)) // g).numpy()
    shard = RolloutShard(step=0, shard=0, group_size=g, prompt_ids=prompts, golds=golds, response_ids=responses,
                         response_texts=texts, behaviour_logprobs=[[0.0] * len(x) for x in responses],
                         truncated=truncated, weight_version=0, rewards=rewards.astype(np.float32),
                         advantages=adv.astype(np.float32))
    return collate([shard], pad_id), scorer.algo, correct


def measure(cfg, prompts: int, seed: int) -> dict:
    """The gate's figures (module docstring) for the job ``cfg`` on ``prompts`` training prompts."""
    from transformers import AutoModelForCausalLM

    from actors.policy_forward import policy_logprobs_entropy
    from losses.grad_checks import credit_grad_checks
    from pipeline.setup import prepare_policy, synthetic_problems

    if cfg.data.source != "synthetic":
        raise ConfigError("data.source", "the credit check samples the synthetic task's prompts: use data=synthetic")
    path, tok = prepare_policy(cfg)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    problems = synthetic_problems(cfg)[:prompts]
    sample = sample_groups(model, tok, problems, cfg, seed)
    batch, algo, correct = training_batch(cfg, sample[0], problems, *sample[1:], tok.pad_token_id)
    lp, ent = policy_logprobs_entropy(model, batch, cfg.rollout.n, cfg.rollout.temperature,
                                      cfg.trainer.logprob_chunk_size)
    mask = batch.response_mask
    adv = batch.advantages[:, None].to(lp.dtype) * mask
    credit = algo.shape_credit(adv, ent.detach(), lp.detach(), mask, batch.group_ids)
    weight = credit.advantages * credit.token_weight
    params = [p for p in model.parameters() if p.requires_grad]
    checks = credit_grad_checks(lp, adv, weight, ent.detach(), mask, batch.group_ids, params)
    signed = mask.bool() & (adv != 0)
    w = (weight[signed] / adv[signed]).detach()
    m = mask.bool()
    return {"algorithm": cfg.algorithm.name, "prompts": prompts, "samples": len(sample[2]),
            "accuracy": float(np.mean(correct)), "signed_token_share": float(signed.sum() / m.sum()),
            "entropy_mean": float(ent.detach()[m].mean()),
            "high_entropy_share": float((ent.detach()[m] > 0.1).float().mean()),
            "weight_min": float(w.min()) if len(w) else None, "weight_max": float(w.max()) if len(w) else None,
            "weight_at_cap_share": float((w >= w.max() - 1e-6).float().mean()) if len(w) else None, **checks}


@app(str(CONFIG_DIR), "credit_check")
def main(hydra_cfg: DictConfig) -> None:
    from pipeline.run import fail_cleanly

    c = OmegaConf.to_container(hydra_cfg.credit_check)
    if not (isinstance(c["prompts"], int) and c["prompts"] >= 1):
        fail(f"credit_check.prompts: must be an integer >= 1, got {c['prompts']!r}")
    if not (isinstance(c["max_cosine"], (int, float)) and -1 <= c["max_cosine"] <= 1):
        fail(f"credit_check.max_cosine: must be a number in [-1, 1], got {c['max_cosine']!r}")
    job = OmegaConf.to_container(hydra_cfg, resolve=True)
    job.pop("credit_check")
    try:
        cfg = config_mod.resolve_paths(config_mod.load(job))
        result = measure(cfg, int(c["prompts"]), cfg.seed)
    except Exception as exc:  # noqa: BLE001 - config errors become one line, the rest re-raises
        fail_cleanly(exc)
    cos = result.get("grad/cos_shaped_plain")
    result["max_cosine"], result["pass"] = c["max_cosine"], cos is not None and cos <= c["max_cosine"]
    text = json.dumps(result)
    print(text, flush=True)
    if c["out"]:
        with open(c["out"], "w") as f:
            f.write(text + "\n")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"[credit check] {verdict}: cos(g_shaped, g_plain) = {cos} (gate: <= {c['max_cosine']}), "
          f"accuracy {result['accuracy']:.3f}, weights in [{result['weight_min']}, {result['weight_max']}], "
          f"{result['weight_at_cap_share']} of the signed tokens at the cap", file=sys.stderr, flush=True)
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
