"""Two local runs on one machine (a study with ``max_concurrent`` 2): a worker that asks Ray for "the" cluster
with no address -- as Ray Train's placement-group cleaner does through the state API -- must find its own, not
fail with "Found multiple active Ray instances" (``pipeline.setup.ray_worker_setup`` pins ``RAY_ADDRESS``)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.setup import ray_worker_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OTHER_RAY = ("import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False); print('up', flush=True); "
             "sys.stdin.read(); ray.shutdown()")  # another run's Ray, until its stdin closes


def _bootstrap_address() -> str:
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die(None)


@pytest.mark.slow
@pytest.mark.extended  # CI: the study test runs two jobs side by side and finds no such error in their logs
def test_a_worker_finds_its_own_cluster_beside_another_local_ray():
    import ray

    other = subprocess.Popen([sys.executable, "-c", OTHER_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "up"
        env = {"env_vars": {"PYTHONPATH": REPO}, "worker_process_setup_hook": "pipeline.setup.ray_worker_setup"}
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env=env)
        try:
            own = ray.get_runtime_context().gcs_address
            assert ray.get(ray.remote(_bootstrap_address).remote()) == own
            with pytest.raises(ConnectionError, match="multiple active Ray instances"):
                _bootstrap_address()  # the control: this driver, not pinned, cannot tell the two apart
        finally:
            ray.shutdown()
    finally:
        other.stdin.close()
        other.wait(timeout=60)


def test_outside_ray_the_hook_pins_nothing(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_worker_setup()
    assert "RAY_ADDRESS" not in os.environ
