"""The guard over real HTTP, in front of Ray Serve LLM's own ingress FastAPI app (``init()``: its exception
and validation-error middleware, CORS, metrics) whose routes parse Ray's request models and echo what they
received. No Ray cluster, no engine: the routes stand in for the engine only. Quick (about a second)."""
import json
import socket
import threading
import time

import httpx
import pytest

from serve.guard import Guard, GuardSettings

KEY = "k"
SETTINGS = GuardSettings(api_key=KEY, models=("m",), max_body_bytes=10_000, max_sequences=8, max_tokens=100)


def _ingress_app():
    """Ray's ingress FastAPI app with echo routes, the guard outermost (as ``GuardedIngress`` adds it)."""
    from fastapi import Request
    from ray.llm._internal.serve.core.ingress.ingress import init
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    app = init()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return {"n": body.n, "prompt": body.prompt, "max_tokens": body.max_tokens}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        return {"n": body.n, "messages": len(body.messages)}

    async def ready() -> bool:
        return True

    app.add_middleware(Guard, settings=SETTINGS, ready=ready)
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
