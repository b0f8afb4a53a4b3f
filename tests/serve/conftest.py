"""Shared fixtures: tiny local checkpoints and one real Ray Serve deployment for the whole module."""
import socket

import pytest

API_KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny random Qwen2 checkpoints (different seeds) built locally, no downloads."""
    from pipeline.tiny_model import build_random_policy

    root = tmp_path_factory.mktemp("ckpt")
    return {name: build_random_policy(str(root / name), seed=seed) for name, seed in (("tiny-a", 0), ("tiny-b", 1))}


@pytest.fixture(scope="session")
def served(tiny_checkpoints):
    """Ray Serve on a local 4-CPU Ray cluster hosting both checkpoints behind an API key.

    Yields (base_url, api_key). Ray >= 2.52 enables token authentication for new local clusters
    (it sets RAY_AUTH_MODE=token and writes ~/.ray/auth_token); that only guards Ray's own
    control plane, not Serve's HTTP proxy, so clients need only our own API key.
    """
    import ray
    from ray import serve

    from serve.run import start

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = {"checkpoints": tiny_checkpoints, "port": _free_port(), "api_key": API_KEY,
           "max_tokens_limit": 256, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    try:
        url = start(cfg)
        yield url, API_KEY
    finally:
        serve.shutdown()
        ray.shutdown()
