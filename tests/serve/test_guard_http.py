"""The guard over real HTTP, in front of Ray Serve LLM's own ingress FastAPI app (``init()``: its exception
and validation-error middleware, CORS, metrics) whose routes parse Ray's request models and echo what they
received. No Ray cluster, no engine: the routes and health probes stand in for the engines (with faults
injected on purpose: a dead engine, a hung one). Quick (a few seconds)."""
import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from serve.guard import Guard, GuardSettings
from serve.health import RETRY_AFTER_S, EngineHealth

KEY = "k"
SETTINGS = GuardSettings(api_key=KEY, models=("m", "dead", "hung"), max_body_bytes=10_000, max_sequences=8,
                         max_tokens=100)
FAULTS = {"dead": False, "hung": False}  # injected: the engine of model "dead" died / of "hung" stopped
PROBE_TIMEOUT_S = 0.3  # ProbedLLMServer.check_health raises after health.probe_timeout_s on a hung engine


async def _engine(model: str) -> None:
    """What the model's engine does with a request: fail (dead, as Ray's 500), never answer (hung), or answer."""
    if FAULTS.get(model) and model == "dead":
        raise RuntimeError("EngineDeadError: engine core died")
    if FAULTS.get(model) and model == "hung":
        await asyncio.Event().wait()


def _probe(model: str):
    async def check_health():
        if FAULTS.get(model) and model == "hung":
            await asyncio.sleep(PROBE_TIMEOUT_S)
            raise RuntimeError(f"engine did not answer within {PROBE_TIMEOUT_S}s; replacing the replica")
        await _engine(model)
    return check_health


def _ingress_app():
    """Ray's ingress FastAPI app with echo routes, the guard outermost (as ``GuardedIngress`` adds it)."""
    from fastapi import Request
    from ray.llm._internal.serve.core.ingress.ingress import init
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    app = init()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        await _engine(body.model)
        return {"n": body.n, "prompt": body.prompt, "max_tokens": body.max_tokens}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        return {"n": body.n, "messages": len(body.messages)}

    health = EngineHealth({m: _probe(m) for m in SETTINGS.models}, wait_s=PROBE_TIMEOUT_S + 1, period_s=0.1)
    app.add_middleware(Guard, settings=SETTINGS, health=health)
    return app


@pytest.fixture(scope="module")
def url():
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_ingress_app(), host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def _post(url, path, body, content_type):
    headers = {"Authorization": f"Bearer {KEY}"} | ({"Content-Type": content_type} if content_type else {})
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/{path}", content=raw, headers=headers, timeout=30)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain",
                                          "application/octet-stream", "application/json; charset=utf-8", "bogus"])
def test_json_body_is_json_whatever_the_content_type(url, content_type):
    """Issue 17.8: ``curl -d`` (form-urlencoded) or text/plain bodies got a 500 from Ray's validation handler."""
    resp = _post(url, "completions", {"model": "m", "prompt": "hi", "n": 2}, content_type)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"n": 2, "prompt": "hi", "max_tokens": 16}
    chat = _post(url, "chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                 content_type)
    assert chat.status_code == 200 and chat.json() == {"n": 1, "messages": 1}, chat.text


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_bodies_that_are_not_json_get_a_400_naming_the_body(url, content_type):
    for raw in (b"model=m&prompt=hi", b"", b"\xff\xfe{"):
        resp = _post(url, "completions", raw, content_type)
        assert resp.status_code == 400, (raw, resp.text)
        assert resp.json()["error"]["message"] == "the request body is not valid JSON"


@pytest.mark.parametrize("field,value,seen", [("n", "9", None), ("n", 9.0, None), ("n", " 9 ", None),
                                              ("n", "8", 8), ("n", 8.0, 8), ("max_tokens", "101", None),
                                              ("max_tokens", 1e3, None), ("max_tokens", "100", 100)])
def test_limits_count_after_the_servers_coercion(url, field, value, seen):
    """Issue 17.10: ``"n": "128"`` (a string) or a float bypassed ``limits.max_sequences``; the route's model
    coerces them to ints, so the guard counts the coerced value. ``seen``: what the route got (None: refused)."""
    for path, body in (("completions", {"model": "m", "prompt": "hi"}),
                       ("chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})):
        resp = _post(url, path, {**body, field: value}, "application/json")
        if seen is None:
            assert resp.status_code == 400 and resp.json()["error"]["param"] == field, (path, resp.text)
        else:
            assert resp.status_code == 200 and resp.json()[field if path == "completions" else "n"] == (
                seen if path == "completions" or field == "n" else 1), (path, resp.text)
    batch = _post(url, "completions", {"model": "m", "prompt": ["a", "b"], "n": "5"}, "text/plain")
    assert batch.status_code == 400 and "10 sequences" in batch.json()["error"]["message"]


def _timed(method, url, **kw):
    start = time.monotonic()
    resp = httpx.request(method, url, timeout=30, **kw)
    return resp, time.monotonic() - start


def _wait_for_health(url, status: int) -> None:
    """Poll /health until it answers ``status``; every answer within a second, whatever the engines do."""
    deadline = time.monotonic() + 10
    while True:
        health, took = _timed("GET", url + "/health")
        assert took < 1.0, f"/health took {took:.2f}s"
        if health.status_code == status:
            assert health.json() == {"status": "ok" if status == 200 else "unavailable"}
            return
        assert time.monotonic() < deadline, f"/health did not answer {status} within 10 s"
        time.sleep(0.05)


def test_dead_or_hung_engines_get_fast_503s_and_health_answers_at_once(url):
    """Issue 17.11: /health answers within a second whatever the engines do; a request for a model whose
    engine died (Ray: 500) or hangs gets 503 with Retry-After, not a 500 or a wait; the others are served."""
    auth = {"Authorization": f"Bearer {KEY}"}

    def complete(model):
        resp, took = _timed("POST", url + "/v1/completions", json={"model": model, "prompt": "x"}, headers=auth)
        if resp.status_code == 503:
            assert resp.headers["retry-after"] == str(RETRY_AFTER_S), resp.headers
            assert resp.json()["error"]["type"] == "service_unavailable" and repr(model) in resp.text, resp.text
        return resp.status_code, took

    _wait_for_health(url, 200)
    try:
        FAULTS["dead"] = True  # the first request meets the engine's 500 before any probe noticed
        status, took = complete("dead")
        assert status == 503 and took < 1.5, (status, took)
        _wait_for_health(url, 503)
        assert complete("dead")[0] == 503 and complete("m")[0] == 200
        FAULTS["dead"] = False
        _wait_for_health(url, 200)
        FAULTS["hung"] = True
        _wait_for_health(url, 503)  # detected after the engine's own probe timeout
        status, took = complete("hung")
        assert status == 503 and took < 1.0, (status, took)
        assert complete("m")[0] == 200
    finally:
        FAULTS.update(dead=False, hung=False)
    _wait_for_health(url, 200)  # "replaced": answers again
    assert complete("hung")[0] == 200 and complete("dead")[0] == 200
