"""Fast checks (no Ray cluster, no engine): config -> LLMConfig, the guard's request checks and error cleaning."""
import json

import pytest

from serve.config import to_serve_config
from core.engine import seeded_prefill_safe_kwargs
from serve.guard import GuardSettings, authorized, clean_error, request_error


def test_serve_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"^autoscaling\.bogus: unknown key\(s\) \['bogus'\]"):
        to_serve_config({"autoscaling": {"bogus": 1}})
    with pytest.raises(ValueError, match="has no config.json"):
        to_serve_config({"checkpoint": str(tmp_path)}).models()
    with pytest.raises(ValueError, match="checkpoint=<dir>"):
        to_serve_config({}).models()
    with pytest.raises(ValueError, match=r"^limits\.max_body_bytes: "):
        to_serve_config({"limits": {"max_body_bytes": 0}})
    with pytest.raises(ValueError, match=r"^device: "):
        to_serve_config({"device": "tpu"})
    from serve.models import pin_newest_checkpoint
    with pytest.raises(ValueError, match="no complete checkpoint"):
        pin_newest_checkpoint(str(tmp_path))


def test_seeded_prefill_safe_kwargs():
    assert seeded_prefill_safe_kwargs(512) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 512}
    assert seeded_prefill_safe_kwargs(512, 4096)["max_num_batched_tokens"] == 4096
    assert seeded_prefill_safe_kwargs(512, 4096, cpu=False) == {}


def test_llm_configs_cpu_and_gpu(tiny_checkpoints, run_dir):
    from serve.models import llm_configs

    cfg = to_serve_config({"checkpoint": tiny_checkpoints["tiny-a"], "model_name": "a", "follow": str(run_dir),
                           "engine": {"max_num_batched_tokens": 64, "extra": {"enable_chunked_prefill": True}}})
    a, live = llm_configs(cfg)
    assert (a.model_id, live.model_id) == ("a", "policy") and cfg.host == "127.0.0.1"
    assert a.engine_kwargs["enable_chunked_prefill"] is False  # forced on CPU, whatever the config says
    assert a.engine_kwargs["max_num_batched_tokens"] == a.engine_kwargs["max_model_len"] == 512
    assert a.placement_group_config["bundles"] == [{"CPU": 0.5}] and a.accelerator_config.kind == "cpu"
    assert live.experimental_configs["eapo_follow_dir"] == str(run_dir)
    assert (live.model_loading_config.model_source != str(run_dir)
            and json.load(open(live.model_loading_config.model_source + "/config.json"))["vocab_size"] > 0)
    gpu = llm_configs(to_serve_config({"checkpoint": tiny_checkpoints["tiny-a"], "device": "gpu",
                                       "engine": {"dtype": "bfloat16", "kv_cache_gb": None,
                                                  "extra": {"tensor_parallel_size": 2}}}))[0]
    assert gpu.placement_group_config["bundles"] == [{"CPU": 0.5, "GPU": 1}] * 2
    assert "enable_chunked_prefill" not in gpu.engine_kwargs and gpu.accelerator_config.kind == "gpu"
    assert "kv_cache_memory_bytes" not in gpu.engine_kwargs and "gpu_memory_utilization" not in gpu.engine_kwargs
    assert a.engine_kwargs["kv_cache_memory_bytes"] == 256 << 20  # engine.kv_cache_gb: 0.25 (serve.yaml)


def test_engine_section_is_the_one_engine_type_and_checked_by_key():
    with pytest.raises(ValueError, match=r"^engine\.kv_cache_mb: unknown key"):
        to_serve_config({"engine": {"kv_cache_mb": 256}})
    with pytest.raises(ValueError, match=r"^engine\.kv_cache_gb: must be > 0"):
        to_serve_config({"engine": {"kv_cache_gb": 0}})
    with pytest.raises(ValueError, match=r"^engine\.kv_cache_gb: must be set on CPU"):
        to_serve_config({"engine": {"kv_cache_gb": None}})


S = GuardSettings(api_key="k", models=("m",), max_body_bytes=1000, max_sequences=8, max_tokens=100)


@pytest.mark.parametrize("kind,body,status,param", [
    ("completions", [1], 400, None),
    ("completions", {"model": "other", "prompt": "x"}, 404, "model"),
    ("completions", {"model": "m", "prompt": "a\ud800"}, 400, "prompt"),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\udfff"}]},
     400, "messages.1.content"),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": {"a": 1}}]}, 400, "messages.0.content"),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 400,
     "messages.0.content"),
    ("completions", {"model": "m", "prompt": "x", "max_tokens": 101}, 400, "max_tokens"),
    ("chat", {"model": "m", "messages": [], "max_completion_tokens": 101}, 400, "max_completion_tokens"),
    ("completions", {"model": "m", "prompt": [[1]] * 9}, 400, "prompt"),
    ("completions", {"model": "m", "prompt": ["a", "b"], "n": 5}, 400, "n"),
    # counted after the coercion the route's pydantic model applies (issue 17.10)
    ("completions", {"model": "m", "prompt": ["a", "b"], "n": "5"}, 400, "n"),
    ("completions", {"model": "m", "prompt": "x", "n": 9.0}, 400, "n"),
    ("chat", {"model": "m", "messages": [], "n": "128"}, 400, "n"),
    ("completions", {"model": "m", "prompt": "x", "max_tokens": "101"}, 400, "max_tokens"),
    ("completions", {"model": "m", "prompt": [[1.0]] * 9}, 400, "prompt"),
])
def test_request_errors_name_the_field(kind, body, status, param):
    assert request_error(kind, body, S)[0::2] == (status, param)


def test_acceptable_requests_pass():
    assert request_error("completions", {"model": "m", "prompt": [1, 2, 3] * 50, "n": 8, "max_tokens": 100}, S) is None
    assert request_error("completions", {"model": "m", "prompt": [1.0, 2.0] * 50, "n": "8"}, S) is None  # one prompt
    assert request_error("completions", {"model": "m", "prompt": "x", "n": "two"}, S) is None  # the server's 400
    ok_parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert request_error("chat", {"model": "m", "messages": [{"role": "user", "content": ok_parts}]}, S) is None


def test_authorization_is_exact_on_raw_bytes():
    assert authorized([(b"authorization", b"Bearer k")], "k") and authorized([], None)
    for value in (b"Bearer k ", b"bearer k", b"Bearer \xff\xfe", b"Bearer kk", b"k"):
        assert not authorized([(b"authorization", value)], "k")
    assert not authorized([], "k")


RAY_500 = json.dumps({"error": {"message": "Message: Internal Server Error (Request ID: r1), original exception: "
                                           "ray::ServeReplica (pid=9734, ip=192.0.2.2, actor_id=c2d7) Traceback ..."}})


@pytest.mark.parametrize("status,raw,body,kind,message,param", [
    (500, RAY_500, {}, "completions", "internal error while serving the request (request id r1)", None),
    (400, json.dumps({"error": {"message": "Message: vllm.exceptions.VLLMValidationError: Either prompt or "
                                           "prompt_embeds must be provided and non-empty. (parameter=prompt) "
                                           "(Request ID: r1), Internal exception: vllm.exceptions.X"}}),
     {"prompt": ""}, "completions", "Either prompt or prompt_embeds must be provided and non-empty.", "prompt"),
    (400, json.dumps({"error": {"message": "Invalid request format: Input should be a valid string at ('body', "
                                           "'messages', 0, 'ChatCompletionDeveloperMessageParam', 'content', 'str')",
                                "param": 5}}), {"messages": []}, "chat", None, "messages.0.content"),
    (400, json.dumps({"error": {"message": "Message: n must be 1 when using greedy sampling, got 2. (Request ID: r)"}}),
     {"model": "m", "n": 2, "temperature": 0}, "completions", "n must be 1 when using greedy sampling, got 2.", "n"),
    (400, json.dumps({"error": {"message": "Message: This model's maximum context length is 512 tokens. However, "
                                           "your prompt contains at least 513 input tokens (Request ID: r)"}}),
     {"model": "m", "messages": []}, "chat", None, "messages"),
    (404, json.dumps({"detail": "no such model"}), {"model": "x"}, "completions", "no such model", "model"),
    (400, b"not json", None, "completions", "request rejected (HTTP 400)", None),
])
def test_error_bodies_are_clean(status, raw, body, kind, message, param):
    err = clean_error(status, raw if isinstance(raw, bytes) else raw.encode(), body, kind, "r1")["error"]
    assert err["param"] == param and err["code"] == status
    assert message is None or err["message"] == message
    for leak in ("Traceback", "ray::", "pid=", "192.0.2.2", "Internal exception", "vllm.exceptions"):
        assert leak not in err["message"]
