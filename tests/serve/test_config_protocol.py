"""Fast checks of the serve config and request schemas (no Ray, no vLLM)."""
import pytest

from serve.config import to_serve_config
from serve.protocol import RequestError, parse_request


def test_serve_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['bogus'\] in serve.autoscaling"):
        to_serve_config({"autoscaling": {"bogus": 1}})
    with pytest.raises(ValueError, match="has no config.json"):
        to_serve_config({"checkpoint": str(tmp_path)}).models()
    with pytest.raises(ValueError, match="checkpoint=<dir>"):
        to_serve_config({}).models()


def test_serve_config_defaults_bind_localhost():
    cfg = to_serve_config({"autoscaling": {"max_replicas": 3}})
    assert cfg.host == "127.0.0.1" and cfg.autoscaling.max_replicas == 3 and cfg.engine.dtype == "float32"


@pytest.mark.parametrize("kind,body,param", [
    ("completions", {"model": "m", "prompt": 5}, "prompt"),
    ("completions", {"model": "m", "prompt": "x", "top_p": 0}, "top_p"),
    ("completions", {"model": "m", "prompt": []}, "prompt"),
    ("chat", {"model": "m", "messages": []}, "messages"),
    ("chat", {"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
])
def test_schema_errors_name_the_field(kind, body, param):
    with pytest.raises(RequestError) as info:
        parse_request(kind, body)
    assert info.value.status == 400 and info.value.param == param
