"""The example cluster configs in ``deploy/`` stay true: they parse, they have the CPU and GPU worker groups
the README promises, and the job they launch composes and validates with today's configuration keys."""
from __future__ import annotations

import shlex

import yaml

from pipeline.config import compose
from tests.conftest import REPO


def _overrides(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint)
    assert words[:3] == ["python", "-m", "pipeline.run"], entrypoint
    return words[3:]


def test_kuberay_rayjob_runs_a_valid_job_on_cpu_and_gpu_groups(monkeypatch):
    spec = yaml.safe_load((REPO / "deploy" / "kuberay-rayjob.yaml").read_text())
    assert spec["kind"] == "RayJob"
    groups = {g["groupName"]: g for g in spec["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" in gpu_limits and "cpu" in groups
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # on the cluster its nodes, not this machine, have the GPUs
    cfg = compose(*_overrides(spec["spec"]["entrypoint"]))
    assert cfg.ray_autoscaling and cfg.trainer.use_gpu and cfg.trainer.zero_stage == 3


def test_ray_up_config_has_cpu_and_gpu_worker_groups_and_a_valid_job(monkeypatch):
    text = (REPO / "deploy" / "ray-cluster.yaml").read_text()
    spec = yaml.safe_load(text)
    types = spec["available_node_types"]
    assert types["gpu_workers"]["resources"]["GPU"] > 0 and "cpu_workers" in types
    assert spec["head_node_type"] in types and spec["idle_timeout_minutes"] > 0
    # the job command in its header comment
    lines = [line.lstrip("# ").rstrip(" \\") for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if "pipeline.run" in line)
    command = " ".join(lines[start:start + 4])
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    cfg = compose(*_overrides(command[command.index("python -m pipeline.run"):]))
    assert cfg.ray_autoscaling and cfg.rollout.num_actors == 8 and cfg.trainer.num_workers == 8
