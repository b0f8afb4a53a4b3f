"""What stays ours in front of Ray's OpenAI ingress: API key, routes, request limits, clean error bodies.

``Guard`` is a pure ASGI middleware on the ingress' FastAPI app (outermost, so it runs before Ray parses
anything). In order: ``GET /health`` answers without a key and reveals nothing but ok/unavailable;
every other route needs ``Authorization: Bearer <key>`` (any header bytes, constant-time compare);
only the OpenAI routes below exist; bodies over ``max_body_bytes`` get 413; the JSON is checked for
what Ray and vLLM would turn into a 500 or unbounded work (unknown model, lone surrogates, malformed
chat content, ``prompts x n`` and ``max_tokens`` over the limits, counted after the route model's own
coercion); the body is JSON whatever its Content-Type. A model whose engine failed its probe
(``serve.health``) gets 503 + Retry-After at once, as does an engine 5xx that a fresh probe confirms.
Every error response leaving the server is rewritten to ``{"error": {message, type, param, code}}`` with
``param`` naming the field and no internals (Ray's bodies carry tracebacks, node IPs and actor ids; a 5xx
keeps only its request id).
"""
from __future__ import annotations

import functools
import hmac
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from ray.serve.llm.ingress import OpenAiIngress

from serve.health import RETRY_AFTER_S, EngineHealth

ROUTES = {("POST", "/v1/completions"): "completions", ("POST", "/v1/chat/completions"): "chat",
          ("GET", "/v1/models"): "models"}
TYPES = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large", 503: "service_unavailable"}
UNAVAILABLE = (f"model {{model!r}} is unavailable: its engine does not answer and Serve is replacing it; retry "
               f"after {RETRY_AFTER_S} s")


@dataclass(frozen=True)
class GuardSettings:
    api_key: str | None
    models: tuple[str, ...]
    max_body_bytes: int
    max_sequences: int
    max_tokens: int


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def authorized(headers: list[tuple[bytes, bytes]], api_key: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <key>`` on the raw header bytes."""
    if api_key is None:
        return True
    got = next((v for k, v in headers if k.lower() == b"authorization"), b"")
    return hmac.compare_digest(got, b"Bearer " + api_key.encode())


def _bad_string(body: Any) -> str | None:
    """Dotted path of the first string (or key) that is not valid Unicode (a lone surrogate)."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            sub = f"{path}.{key}".lstrip(".")
            for s in (key, item):
                if isinstance(s, str):
                    try:
                        s.encode()
                    except UnicodeEncodeError:
                        return sub
            stack.append((sub, item))
    return None


def _content_ok(content: Any) -> bool:
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) and (p["type"] != "text" or isinstance(p.get("text"), str))
        for p in content)


def _count(value: Any, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


@functools.cache
def _field_adapter(kind: str, name: str) -> TypeAdapter | None:
    """Pydantic's validator of field ``name`` of the request model Ray's route parses ``kind`` with."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    field = (ChatCompletionRequest if kind == "chat" else CompletionRequest).model_fields.get(name)
    if field is None:
        return None
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def coerced(kind: str, body: dict, name: str) -> Any:
    """``body[name]`` as the server will see it: after the same (lax) pydantic coercion FastAPI applies to
    the route's request model (``"128"`` and ``128.0`` become ``128``). Unchanged when the model has no such
    field or the value does not validate (the server then answers 400 naming the field)."""
    value = body.get(name)
    adapter = None if value is None else _field_adapter(kind, name)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return value


def _prompts(prompt: Any) -> int:
    """Prompts in a (coerced) completions ``prompt``: a list of strings or of token lists is a batch."""
    if isinstance(prompt, list) and prompt and not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    return 1


def request_error(kind: str, body: Any, s: GuardSettings) -> tuple[int, str, str | None] | None:
    """(status, message, param) for a request the server must refuse before any work, else None."""
    if not isinstance(body, dict):
        return 400, "the request body must be a JSON object", None
    model = body.get("model")
    if isinstance(model, str) and model not in s.models:
        return 404, f"unknown model {model[:100]!r}; this server serves {list(s.models)}", "model"
    bad = _bad_string(body)
    if bad is not None:
        return 400, f"field '{bad}' is not valid Unicode (lone surrogate)", bad
    for name in ("max_tokens", "max_completion_tokens"):
        if _count(coerced(kind, body, name), 0) > s.max_tokens:
            return 400, f"'{name}' is {body[name]!r:.40}, above this server's limit of {s.max_tokens}", name
    prompts = _prompts(coerced(kind, body, "prompt")) if kind == "completions" else 1
    messages = body.get("messages") if kind == "chat" else None
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and not _content_ok(message.get("content")):
            return 400, "message content must be a string, null or a list of content parts", f"messages.{i}.content"
    n = max(_count(coerced(kind, body, "n")), _count(coerced(kind, body, "best_of")))
    if prompts * n > s.max_sequences:
        return 400, (f"{prompts} prompt(s) x n={n} is {prompts * n} sequences, above this server's limit of "
                     f"{s.max_sequences} per request"), "n" if n > 1 else "prompt"
    return None


_FIELD_WORDS = re.compile(r"[A-Za-z_]+")
_TYPE_TAGS = {"body", "str", "int", "float", "bool", "list", "dict", "none"}


def clean_error(status: int, raw: bytes, body: Any, kind: str, request_id: str) -> dict:
    """The error body a client sees: the reason and the field it names, never tracebacks or addresses."""
    if status >= 500:
        return error_body(status, f"internal error while serving the request (request id {request_id})")
    try:
        data = json.loads(raw)
        err = data.get("error") if isinstance(data.get("error"), dict) else {"message": data.get("detail")}
        msg = str(err.get("message") or "")
    except (ValueError, AttributeError):
        msg = ""
    msg = re.split(r" \(Request ID: |, Internal exception: ", msg.removeprefix("Message: "))[0]
    msg = re.sub(r"^(\w+\.)*\w+(Error|Exception): ", "", msg).strip()
    msg = "" if re.search(r'Traceback|File "|ray::|pid=|actor_id', msg) else msg  # never pass internals on
    loc = re.search(r"^Invalid request format: (.*) at \((.*)\)$", msg, re.S)
    keys = set(body) if isinstance(body, dict) else set()
    param = None
    if loc:  # pydantic: the location names the field, minus union member tags
        parts = [a or b for a, b in re.findall(r"'([A-Za-z_]\w*)'|(\d+)", loc.group(2))]
        param = ".".join(p for p in parts if p not in _TYPE_TAGS and (p.isdigit() or p.islower())) or None
        msg = f"invalid field {param!r}: {loc.group(1)}"
    elif m := re.search(r" ?\(parameter=(\w+)[^)]*\)", msg):
        param, msg = m.group(1), msg.replace(m.group(0), "")
        param = ("messages" if kind == "chat" else "prompt") if param == "input_tokens" else param
    else:  # the first field of the request the message mentions (or the input it is about)
        words = [w.lower() for w in _FIELD_WORDS.findall(msg)]
        fields = keys - {"model"} if "model" in keys and status != 404 else keys | {"model"}
        aliases = {"prompt": "prompt", "token": "prompt", "conversation": "messages", "multimodal": "messages",
                   "template": "chat_template" if "chat_template" in keys else "messages"}
        param = next((w for w in words if w in fields), None) or next((aliases[w] for w in words if w in aliases), None)
        if param == "prompt" and kind == "chat":
            param = "messages"
    return error_body(status, (msg or f"request rejected (HTTP {status})")[:1000], param)


async def _send_json(send, status: int, payload: dict, request_id: bytes = b"") -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(b"retry-after", str(RETRY_AFTER_S).encode())] if status == 503 else []
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"x-request-id", request_id)] if request_id else [])})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app, settings: GuardSettings, health: EngineHealth):
        self.app, self.s, self.health = app, settings, health

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if path == "/health":
            ok = await self.health.ready()
            return await _send_json(send, 200 if ok else 503, {"status": "ok" if ok else "unavailable"})
        if not authorized(scope.get("headers", []), self.s.api_key):
            return await _send_json(send, 401, error_body(401, "missing or invalid API key (send 'Authorization: Bearer <key>')"))
        kind = ROUTES.get((method, path)) or ("model" if method == "GET" and path.startswith("/v1/models/") else None)
        if kind is None:
            return await _send_json(send, 404, error_body(404, f"no route {method} {path[:100]}"))
        body: Any = None
        if method == "POST":
            raw = await _read_body(receive, self.s.max_body_bytes)
            if raw is None:
                return await _send_json(send, 413, error_body(413, f"request body over {self.s.max_body_bytes} bytes"))
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                return await _send_json(send, 400, error_body(400, "the request body is not valid JSON"))
            refused = request_error(kind, body, self.s)
            if refused:
                return await _send_json(send, refused[0], error_body(*refused))
            model = body.get("model")
            if isinstance(model, str) and self.health.failing(model):
                return await _send_json(send, 503, error_body(503, UNAVAILABLE.format(model=model[:100])))
            receive, scope = _replay(raw, receive), _as_json(scope)
        rid = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"")
        await self.app(scope, receive, _cleaning_send(send, body, kind, rid, self.health))


async def _read_body(receive, cap: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
        if message["type"] != "http.request" or not message.get("more_body"):
            return b"".join(chunks)


def _as_json(scope: dict) -> dict:
    """``scope`` with ``Content-Type: application/json``: the body parsed as JSON whatever the client declared
    (plain ``curl -d`` sends form-urlencoded), as OpenAI's and vLLM's servers do. FastAPI would otherwise hand
    the raw bytes to the request model, and Ray's validation-error handler fails on them with a 500."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}


def _replay(raw: bytes, receive):
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()
    return replayed


def _cleaning_send(send, body: Any, kind: str, rid: bytes, health: EngineHealth):
    """Pass 2xx/3xx through; buffer an error response (first 64 KiB) and send its cleaned form; a 5xx for a
    model whose engine fails a fresh probe (killed: Ray answers 500 until Serve replaces it) becomes a 503."""
    held: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held.update(start=message, chunks=[], size=0)
            return
        if "start" not in held:
            return await send(message)
        chunk = message.get("body", b"")
        if held["size"] < 1 << 16:
            held["chunks"].append(chunk)
            held["size"] += len(chunk)
        if not message.get("more_body"):
            status = held["start"]["status"]
            model = body.get("model") if isinstance(body, dict) else None
            if status >= 500 and status != 503 and isinstance(model, str) and not await health.recheck(model):
                return await _send_json(send, 503, error_body(503, UNAVAILABLE.format(model=model[:100])), rid)
            clean = clean_error(status, b"".join(held["chunks"]), body, kind, rid.decode("latin-1"))
            await _send_json(send, status, clean, rid)
    return wrapped


class GuardedIngress(OpenAiIngress):
    """Ray's ``OpenAiIngress`` with ``Guard`` as the outermost middleware and ``EngineHealth`` behind
    ``/health`` and the fast 503s."""

    def __init__(self, llm_deployments, model_cards, *, guard: dict, probe_timeout_s: float = 10.0, **kwargs):
        super().__init__(llm_deployments, model_cards, **kwargs)
        self._settings = GuardSettings(**{**guard, "models": tuple(model_cards)})
        probes = {m: h.check_health.remote for m, h in self._default_serve_handles.items()}
        # a hung engine's own probe raises after probe_timeout_s; waiting longer means queued, not failed
        self._health = EngineHealth(probes, wait_s=probe_timeout_s + 5)

    def _set_asgi_app(self, app) -> None:  # Serve hands us the FastAPI app before it starts
        app.add_middleware(Guard, settings=self._settings, health=self._health)
        super()._set_asgi_app(app)
