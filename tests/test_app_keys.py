"""Every key of the evaluation, serving and bench configs (configs/eval/eval.yaml, configs/serve/serve.yaml, the
``bench`` section of configs/bench.yaml) is rejected, naming it, when given an invalid value (keys any value of
their type is valid for take a value of the wrong type). The training job's keys: tests/pipeline/test_every_key.py."""
from __future__ import annotations

import pytest

from core.config_files import read_file
from core.typed import ConfigError
from evaluation.config import to_eval_config
from pipeline.bench import load_bench
from serve.config import RUN_ONLY_KEYS, to_serve_config

WRONG_TYPE = [1, 2]


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("k", "extra"):
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


EVAL_INVALID = {"endpoint": "", "model": "", "api": "soap", "benchmarks": ["nope"], "k": 0, "n": 1, "limit": 0,
                "temperature": -1, "top_p": 0, "max_tokens": 0, "concurrency": 0, "retry_for_s": -1,
                "request_timeout_s": 0, "prompt_template": "no placeholder", "verifier_timeout_s": 0, "plot": "yes"}
EVAL_FREE_FORM = {"api_key", "seed", "data_dir", "output_dir", "cache_dir"}
SERVE_INVALID = {
    "follow_name": "", "follow_poll_s": 0, "host": "", "port": 0, "app_name": "", "device": "tpu", "replica_cpus": 0,
    "ingress_cpus": -1, "max_ongoing_requests": 0, "autoscaling.min_replicas": 0, "autoscaling.max_replicas": 0,
    "autoscaling.target_ongoing_requests": 0, "limits.max_body_bytes": 0, "limits.max_sequences": 0,
    "limits.max_tokens": 0, "health.period_s": 0, "health.probe_timeout_s": 0, "engine.dtype": "float64",
    "engine.max_model_len": 0, "engine.kv_cache_gb": 0, "engine.enforce_eager": "yes",
    "engine.max_num_batched_tokens": 0, "engine.extra": "x",
}
BENCH_INVALID = {"steps": 0, "warmup": 16, "staleness": [0, 0], "baseline": "yes"}
BENCH_FREE_FORM = {"out"}
SERVE_FREE_FORM = {"checkpoint", "model_name", "checkpoints", "follow", "api_key", "engine.seed"}

EVAL_KEYS = leaves(read_file("eval/eval.yaml"))
BENCH = read_file("bench.yaml")["bench"]
SERVE_KEYS = [k for k in leaves(read_file("serve/serve.yaml")) if k not in RUN_ONLY_KEYS]


def test_every_key_has_an_invalid_value():
    assert set(EVAL_KEYS) == set(EVAL_INVALID) | EVAL_FREE_FORM
    assert set(SERVE_KEYS) == set(SERVE_INVALID) | SERVE_FREE_FORM
    assert set(BENCH) == set(BENCH_INVALID) | BENCH_FREE_FORM


@pytest.mark.parametrize("key", EVAL_KEYS)
def test_eval_key_is_rejected_by_name(key):
    bad = EVAL_INVALID.get(key, WRONG_TYPE)
    given = {"model": "m", **({"k": 4} if key == "n" else {}), **nested(key, bad)}
    with pytest.raises(ConfigError) as info:
        to_eval_config(given)
    assert info.value.key == key, str(info.value)


@pytest.mark.parametrize("key", SERVE_KEYS)
def test_serve_key_is_rejected_by_name(key):
    with pytest.raises(ConfigError) as info:
        to_serve_config(nested(key, SERVE_INVALID.get(key, WRONG_TYPE)))
    assert key in str(info.value), str(info.value)


@pytest.mark.parametrize("key", sorted(BENCH))
def test_bench_key_is_rejected_by_name(key):
    with pytest.raises(ConfigError) as info:
        load_bench({**BENCH, key: BENCH_INVALID.get(key, WRONG_TYPE)})
    assert info.value.key == f"bench.{key}", str(info.value)
