"""Evaluation runner against a fake OpenAI-compatible server that fails on purpose (retries, cache/resume,
outputs), and against an endpoint that is down. The real server is exercised in tests/serve."""
import json
import socket
import threading
import time

import pytest

from tests.conftest import REPO

from evaluation.benchmarks import load_benchmark
from evaluation.runner import default_output_dir, evaluate
from evaluation.sampler import EndpointError


class FakeServer:
    """Answers each problem with half correct / half wrong samples; fails the first try with 503."""

    def __init__(self, golds: dict[str, str]):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        self.golds, self.calls, self.seen = golds, 0, set()
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "x", "created": 0}]}

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
           "k": 2, "n": 4, "limit": 3, "output_dir": str(tmp_path), "concurrency": 4, "retry_for_s": 30}
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
    with pytest.raises(ValueError, match=r"^bogus: unknown key"):
        evaluate({"model": "m", "bogus": 1})


def test_unreachable_endpoint_is_one_line_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(EndpointError) as info:
        evaluate({"endpoint": url, "model": "m", "benchmarks": ["aime24"], "limit": 1, "output_dir": str(tmp_path)})
    assert f"{url}/v1" in str(info.value) and "\n" not in str(info.value)

    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "evaluation.run", f"endpoint={url}", "model=m", "benchmarks=[aime24]",
                          "limit=1", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"evaluation: cannot reach the endpoint {url}/v1")
    assert not (tmp_path / ".hydra").exists() and not list(tmp_path.glob("*.log"))


def test_default_output_dir_is_stable_per_endpoint_model_benchmarks():
    from evaluation.config import to_eval_config

    base = {"model": "m/x", "benchmarks": ["aime24"]}
    a = default_output_dir(to_eval_config({**base, "endpoint": "http://h:1/", "seed": 3}))
    assert a == default_output_dir(to_eval_config({**base, "endpoint": "http://h:1/v1"}))
    assert a != default_output_dir(to_eval_config({**base, "endpoint": "http://h:2"}))
    assert a != default_output_dir(to_eval_config({**base, "benchmarks": ["amc23"]}))
    assert a.parent.name == "eval_results" and a.name.startswith("m_x-")
