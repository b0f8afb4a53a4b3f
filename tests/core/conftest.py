"""Shared fixture of the checkpoint tests: a tiny random policy to build checkpoints from."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from task.tiny_model import build_random_policy, tiny_spec

    spec = tiny_spec(hidden_size=32, num_layers=1, intermediate_size=32)
    return build_random_policy(str(tmp_path_factory.mktemp("policy")), seed=0, spec=spec)
