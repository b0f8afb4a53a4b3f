"""Real Ray Serve over real HTTP, exercised with the openai client on tiny local checkpoints."""
import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(served):
    url, key = served
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def test_health_and_models(served, client):
    url, _ = served
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert sorted(m.id for m in client.models.list().data) == ["tiny-a", "tiny-b"]


def test_completions_n_logprobs_seed(client):
    kw = dict(model="tiny-a", prompt="12+7=", max_tokens=8, n=3, temperature=0.6, top_p=0.95,
              seed=123, logprobs=2, extra_body={"ignore_eos": True})
    r1 = client.completions.create(**kw)
    r2 = client.completions.create(**kw)
    assert len(r1.choices) == 3 and r1.usage.completion_tokens == 24
    assert [c.text for c in r1.choices] == [c.text for c in r2.choices]  # same seed, same samples
    lp = r1.choices[0].logprobs
    assert len(lp.tokens) == 8 and len(lp.token_logprobs) == 8 and all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)


def test_chat_completions_with_logprobs(client):
    r = client.chat.completions.create(model="tiny-b", messages=[{"role": "user", "content": "What is 2+2?"}],
                                       max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=2,
                                       extra_body={"ignore_eos": True})
    choice = r.choices[0]
    assert isinstance(choice.message.content, str) and r.model == "tiny-b"
    assert len(choice.logprobs.content) == 6 and len(choice.logprobs.content[0].top_logprobs) == 2


def test_models_are_multiplexed_side_by_side(client):
    kw = dict(prompt="The answer is", max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True})
    a = client.completions.create(model="tiny-a", **kw).choices[0].text
    b = client.completions.create(model="tiny-b", **kw).choices[0].text
    assert a != b  # different weights behind different model ids


BAD_REQUESTS = [
    ("completions", b"{not json", 400, None),
    ("completions", b"[1, 2]", 400, None),
    ("completions", json.dumps({"model": "nope", "prompt": "x"}).encode(), 404, "model"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "max_tokens": 10**6}).encode(), 400, "max_tokens"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "n": "many"}).encode(), 400, "n"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "temperature": "hot"}).encode(), 400, "temperature"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": 5}).encode(), 400, "prompt"),
    ("completions", json.dumps({"model": "tiny-a"}).encode(), 400, "prompt"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "1 " * 3000}).encode(), 400, "prompt"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "logprobs": 10**3}).encode(), 400, "logprobs"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "max_tokens": 0}).encode(), 400, "max_tokens"),
    ("completions", json.dumps({"model": "tiny-a", "prompt": "x", "stream": True}).encode(), 400, "stream"),
    ("chat/completions", json.dumps({"model": "tiny-a", "messages": "hi"}).encode(), 400, "messages"),
    ("chat/completions", json.dumps({"model": "tiny-a", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
     400, "messages.0.role"),
    ("chat/completions", json.dumps({"model": "tiny-a", "messages": [{"role": "user", "content": "2 " * 3000}]}).encode(),
     400, "messages"),
    ("chat/completions", json.dumps({"model": 7, "messages": []}).encode(), 400, "model"),
]


@pytest.mark.parametrize("path,body,status,param", BAD_REQUESTS, ids=[f"{i}-{b[3]}" for i, b in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_4xx_naming_the_field(served, path, body, status, param):
    url, key = served
    resp = httpx.post(f"{url}/v1/{path}", content=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["message"]


def test_api_key_required(served):
    url, _ = served
    body = {"model": "tiny-a", "prompt": "x", "max_tokens": 2}
    assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 401
    bad = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"}, timeout=60)
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_deployment_survives_bad_requests(served, client):
    url, key = served
    for path, body, _, _ in BAD_REQUESTS:
        httpx.post(f"{url}/v1/{path}", content=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert httpx.get(url + "/health").status_code == 200
    assert client.completions.create(model="tiny-a", prompt="1", max_tokens=2).choices


def test_evaluation_runner_against_served_model(served, tmp_path):
    """evaluation.runner.evaluate drives our endpoint end to end (smoke-sized)."""
    from evaluation.runner import evaluate

    url, key = served
    res = evaluate({"endpoint": url, "model": "tiny-a", "api_key": key, "benchmarks": ["aime24", "math500"],
                    "k": 2, "n": 2, "limit": 2, "max_tokens": 16, "output_dir": str(tmp_path)})
    assert set(res["benchmarks"]) == {"aime24", "math500"}
    assert res["benchmarks"]["aime24"]["num_problems"] == 2 and 0.0 <= res["avg"] <= 100.0
    assert sum(res["benchmarks"]["math500"]["reasons"].values()) == 4
    assert (tmp_path / "results.png").exists() and (tmp_path / "results.md").exists()


def test_eval_cli(served, tmp_path):
    """``python -m evaluation.run`` (Hydra) against our endpoint."""
    import subprocess
    import sys

    url, key = served
    out = subprocess.run(
        [sys.executable, "-m", "evaluation.run", f"endpoint={url}", "model=tiny-b", f"api_key={key}",
         "benchmarks=[amc23]", "k=1", "limit=2", "max_tokens=8", "plot=false", f"output_dir={tmp_path}",
         f"hydra.run.dir={tmp_path}/hydra"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "AMC (Avg@1 / Pass@1)" in out.stdout
    assert json.loads((tmp_path / "results.json").read_text())["model"] == "tiny-b"


def test_echo_prompt_logprobs_for_loglikelihood(client):
    """lm-eval style scoring: echo + logprobs + max_tokens=0 returns the prompt's token logprobs."""
    r = client.completions.create(model="tiny-a", prompt="1+1=2", max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == "1+1=2"
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == "1+1=2"
