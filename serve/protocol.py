"""OpenAI-compatible request schemas and error responses."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RequestError(Exception):
    """A client error: HTTP ``status`` with a message naming the offending ``param``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        err_type = "authentication_error" if self.status == 401 else "invalid_request_error"
        return {"error": {"message": self.message, "type": err_type, "param": self.param, "code": self.code}}


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)

    model: str
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    user: str | None = None
    ignore_eos: bool = False  # vLLM extension (fixed-length generations for benchmarks)


class CompletionRequest(_Base):
    """POST /v1/completions."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    max_tokens: int | None = Field(16, ge=0)  # 0 with echo: score the prompt only (lm-eval loglikelihood)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict[str, Any]], None] = None


class ChatCompletionRequest(_Base):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=1)


# Union members show up in pydantic error locations (e.g. "prompt.str"); they are not field names.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def validation_error(exc: ValidationError) -> RequestError:
    """The first pydantic error as a 400 naming the field (e.g. ``messages.0.role``)."""
    err = exc.errors()[0]
    parts = [str(p) for p in err.get("loc", ()) if isinstance(p, int) or p not in _TYPE_TAGS and p.isidentifier()]
    param = ".".join(parts) or None
    return RequestError(400, f"invalid field {param!r}: {err.get('msg')}", param, "invalid_value")


def parse_request(kind: str, body: Any) -> CompletionRequest | ChatCompletionRequest:
    """Validate a decoded JSON body for ``kind`` in {"completions", "chat"}."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object", None, "invalid_json")
    cls = CompletionRequest if kind == "completions" else ChatCompletionRequest
    try:
        req = cls.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if req.stream:
        raise RequestError(400, "streaming is not supported; set 'stream' to false", "stream", "unsupported")
    if isinstance(req, CompletionRequest) and isinstance(req.prompt, list) and not req.prompt:
        raise RequestError(400, "'prompt' must not be empty", "prompt", "invalid_value")
    return req
