"""Resource requests checked against the cluster (pipeline.resources): a request no node can hold, or more
than the whole cluster has at once, is an error naming the config key; the job fails fast with it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.config import compose
from pipeline.resources import ResourceError, autoscaler_bundles, ensure_resources, unfit
from pipeline.run import resource_requests
from tests.conftest import REPO

TWO_CPUS = [{"CPU": 2.0, "memory": 1e10}]


def test_the_default_job_fits_a_two_cpu_machine():
    assert unfit(resource_requests(compose()), TWO_CPUS) is None


def test_an_actor_larger_than_every_node_names_its_key():
    err = unfit(resource_requests(compose("rollout.cpus_per_actor=4")), TWO_CPUS)
    assert err.key == "rollout.cpus_per_actor"
    assert str(err).startswith("rollout.cpus_per_actor=4 needs 4 CPU on one node") and "largest node has 2" in str(err)


def test_gpus_the_cluster_lacks_name_the_key(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # a cluster decides which GPUs exist, not this machine
    err = unfit(resource_requests(compose("trainer.use_gpu=true")), TWO_CPUS)
    assert err.key == "trainer.use_gpu" and "GPU" in str(err)


def test_more_than_the_cluster_holds_at_once_names_the_largest_share():
    # each fits on a node, together they do not: 2 workers x 1 CPU + a 0.5-CPU engine + the shard stage > 2
    err = unfit(resource_requests(compose("trainer.num_workers=2")), TWO_CPUS)
    assert err.key == "trainer.num_workers" and "the cluster has 2 in total" in str(err)
    # on two such nodes it fits
    assert unfit(resource_requests(compose("trainer.num_workers=2")), TWO_CPUS * 2) is None


def test_autoscaler_bundles_one_per_actor():
    bundles = autoscaler_bundles(resource_requests(compose("rollout.num_actors=4")))
    assert bundles.count({"CPU": 0.5}) >= 4 and all(all(v > 0 for v in b.values()) for b in bundles)


def test_without_autoscaling_the_error_is_raised_at_once(monkeypatch):
    import pipeline.resources as R

    monkeypatch.setattr(R, "node_resources", lambda: TWO_CPUS)
    cfg = compose("rollout.cpus_per_actor=4")
    with pytest.raises(ResourceError, match="rollout.cpus_per_actor=4"):
        ensure_resources(resource_requests(cfg), cfg, log=lambda msg: None)


@pytest.mark.slow
def test_the_job_fails_fast_naming_the_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", f"run_dir={tmp_path / 'run'}",
                           "rollout.cpus_per_actor=4", "heldout.size=0"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: rollout.cpus_per_actor=4 needs 4 CPU on one node" in proc.stderr
