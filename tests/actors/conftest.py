"""Fixtures shared by the actor tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local(request):
    """A new local Ray instance (never a cluster another test left running), one CPU, per test module."""
    import ray

    namespace = "test-" + request.module.__name__.rsplit(".", 1)[-1]
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, namespace=namespace)
    yield ray
    ray.shutdown()
