"""Evaluation runner against a fake OpenAI-compatible server (retries, cache/resume, outputs)."""
import json
import socket
import threading
import time

import pytest

from evaluation.benchmarks import load_benchmark
from evaluation.runner import evaluate


class FakeServer:
    """Answers each problem with half correct / half wrong samples; fails the first try with 503."""

    def __init__(self, golds: dict[str, str]):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        self.golds, self.calls, self.seen = golds, 0, set()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            prompt = body["messages"][0]["content"]
            self.calls += 1
            if prompt not in self.seen:
                self.seen.add(prompt)
                return JSONResponse({"error": {"message": "busy"}}, status_code=503)
            gold = self.golds[prompt]
            n = body["n"]
            texts = [f"... so \\boxed{{{gold}}}" if i < n // 2 else "\\boxed{-12345}" for i in range(n)]
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)]}

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def fake_server():
    golds = {p.prompt: p.gold for b in ("aime24", "math500") for p in load_benchmark(b, limit=3)}
    server = FakeServer(golds)
    yield server
    server.stop()


def test_evaluate_end_to_end(fake_server, tmp_path):
    cfg = {"endpoint": f"http://127.0.0.1:{fake_server.port}", "model": "fake", "benchmarks": ["aime24", "math500"],
           "k": 2, "n": 4, "limit": 3, "output_dir": str(tmp_path), "concurrency": 4, "max_retries": 3}
    res = evaluate(cfg)
    for b in ("aime24", "math500"):
        m = res["benchmarks"][b]
        assert m["avg"] == pytest.approx(50.0) and m["num_problems"] == 3 and m["n"] == 4
        assert m["pass"] == pytest.approx(100 * (1 - 1 / 6))  # 1 - C(2,2)/C(4,2)
    assert res["avg"] == pytest.approx(50.0)
    assert json.loads((tmp_path / "results.json").read_text())["avg"] == pytest.approx(50.0)
    assert "AIME24 (Avg@2 / Pass@2)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert fake_server.calls == 12  # 6 problems, each retried once after a 503

    again = evaluate(cfg)  # resumes from the cache: no new requests
    assert fake_server.calls == 12 and again["avg"] == res["avg"]


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="benchmarks"):
        evaluate({"model": "m", "benchmarks": ["nope"]})
    with pytest.raises(ValueError, match="n=2 < k=4"):
        evaluate({"model": "m", "benchmarks": ["aime24"], "k": 4, "n": 2})
    with pytest.raises(ValueError, match="unknown field"):
        evaluate({"model": "m", "bogus": 1})
