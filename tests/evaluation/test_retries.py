"""The evaluator rides out a server that recovers (issue 17.9): a real local HTTP server that fails on purpose
-- goes down and comes back on the same port, answers 503/500/429/408 -- then serves. Other 4xx are never
retried; a server that stays down ends the run after ``retry_for_s`` with one line. Quick (a few seconds)."""
import logging
import socket
import threading
import time

import pytest

from evaluation.benchmarks import load_benchmark
from evaluation.runner import evaluate
from evaluation.sampler import EndpointError


class FaultyServer:
    """An OpenAI-compatible chat endpoint whose answers follow a script of injected faults.

    ``script(prompt, attempt)`` returns ``"down"`` (stop the server and restart it on the same port after
    ``down_s``), an HTTP status to answer with (``Retry-After: 0`` unless ``retry_after`` is None) or None
    (answer: every sample correct). ``attempts`` counts requests per prompt.
    """

    def __init__(self, golds: dict[str, str], script, down_s: float = 1.0, retry_after: str | None = "0"):
        self.golds, self.script, self.down_s, self.retry_after = golds, script, down_s, retry_after
        self.attempts: dict[str, int] = {}
        self.restarts = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = self.thread = None
        self._start()

    def _app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x", "created": 0}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            prompt = body["messages"][0]["content"]
            attempt = self.attempts[prompt] = self.attempts.get(prompt, 0) + 1
            fault = self.script(prompt, attempt)
            if fault == "down":
                threading.Thread(target=self._restart, daemon=True).start()
                fault = 503
            if fault is not None:
                headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
                return JSONResponse({"error": {"message": f"injected {fault}"}}, status_code=fault, headers=headers)
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": f"\\boxed{{{self.golds[prompt]}}}"}} for i in range(body["n"])]}
        return app

    def _start(self):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port,
                                                    log_level="error", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the fake server did not start within 30 s"
            time.sleep(0.02)

    def _restart(self):
        self.stop()
        time.sleep(self.down_s)
        self._start()
        self.restarts += 1

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def problems():
    return load_benchmark("aime24", limit=3)


def _run(server, tmp_path, **cfg):
    return evaluate({"endpoint": f"http://127.0.0.1:{server.port}", "model": "m", "benchmarks": ["aime24"], "k": 1,
                     "limit": 3, "output_dir": str(tmp_path), "plot": False, **cfg})


def test_retries_outlast_a_restart_and_5xx_but_never_a_4xx(problems, tmp_path, caplog):
    """P0: down for 1 s (connection refused), then 503, 500, 502, 504, 429, 408 x2 each: 14 failures in a
    row, more than the old 5 retries; P1: a 400 and a 422, answered once each and counted; P2: fine."""
    p0, p1, p2 = (p.prompt for p in problems)
    faults = ["down"] + [503, 500, 502, 504, 429, 408] * 2 + [503]

    def script(prompt, attempt):
        if prompt == p1:
            return 400
        if prompt == p0 and attempt <= len(faults):
            return faults[attempt - 1]
        return None

    server = FaultyServer({p.prompt: p.gold for p in problems}, script)
    try:
        with caplog.at_level(logging.WARNING, logger="evaluation.sampler"):
            start = time.monotonic()
            res = _run(server, tmp_path, concurrency=1, retry_for_s=60)
            took = time.monotonic() - start
    finally:
        server.stop()
    m = res["benchmarks"]["aime24"]
    assert (m["num_problems"], m["rejected"], m["avg"]) == (2, 1, 100.0), m
    assert server.attempts[p1] == 1 and server.attempts[p2] == 1
    assert server.attempts[p0] == len(faults) + 1  # (the requests refused while it was down never reach it)
    waiting = [r.getMessage() for r in caplog.records if "is not answering" in r.getMessage()]
    assert len(waiting) == 1 and "retry_for_s" in waiting[0], waiting
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
    assert server.restarts == 1 and 1.0 <= took < 30, took  # it was down (connection refused) for 1 s


def test_a_server_that_stays_unavailable_ends_after_retry_for_s(problems, tmp_path, caplog):
    server = FaultyServer({p.prompt: p.gold for p in problems}, lambda prompt, attempt: 503, retry_after=None)
    try:
        with caplog.at_level(logging.WARNING, logger="evaluation.sampler"):
            start = time.monotonic()
            with pytest.raises(EndpointError, match=r"still failing after \d+ s of retries \(retry_for_s=2\): "
                                                    r"HTTP 503") as info:
                _run(server, tmp_path, concurrency=3, retry_for_s=2)
            took = time.monotonic() - start
    finally:
        server.stop()
    assert "\n" not in str(info.value) and 2 <= took < 10, took
    assert sum("is not answering" in r.getMessage() for r in caplog.records) == 1  # 3 requests waiting, one line
    assert min(server.attempts.values()) >= 3
