"""Ray Serve application: an OpenAI-compatible FastAPI ingress in front of a multiplexed vLLM deployment.

    client --HTTP--> Ingress (auth, JSON + schema validation, model lookup)
                        --handle.options(multiplexed_model_id=model)--> ModelServer replicas
                                                                          (one vLLM engine per loaded model)

Serve routes each request to a replica that already holds the requested model when it can
(model multiplexing); a replica keeps up to ``max_models_per_replica`` engines (LRU).
"""
from __future__ import annotations

import dataclasses
import hmac
import json
import os
import time
from typing import Any

from ray import serve

from serve.config import ServeConfig, to_serve_config
from serve.protocol import RequestError, parse_request


def _model_server_class(max_models: int):
    """The model deployment class, with the multiplexing capacity baked into its decorator."""

    class ModelServer:
        """Hosts vLLM engines for the configured checkpoints, loaded on demand per model id."""

        def __init__(self, models: dict[str, str], engine_cfg: dict, limits: dict):
            from serve.config import EngineConfig

            self.models, self.limits = models, limits
            self.engine_cfg = EngineConfig(**engine_cfg)

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def get_engine(self, model_id: str):
            from serve.engine import ModelEngine

            return ModelEngine(model_id, self.models[model_id], self.engine_cfg, self.limits)

        async def generate(self, kind: str, body: dict) -> tuple[int, dict]:
            """(status, JSON body) for a validated request body of ``kind``."""
            try:
                req = parse_request(kind, body)
                engine = await self.get_engine(serve.get_multiplexed_model_id())
                return 200, await engine.handle(req)
            except RequestError as err:
                return err.status, err.body()

    return ModelServer


def _check_auth(api_key: str | None, header: str | None) -> None:
    if api_key is None:
        return
    token = (header or "").removeprefix("Bearer ").strip()
    if not header or not header.startswith("Bearer ") or not hmac.compare_digest(token, api_key):
        raise RequestError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           None, "invalid_api_key")


def _precheck(body: Any, models: list[str], limits: dict) -> str:
    """Checks that need no model: body shape, ``model`` known, ``max_tokens`` within the limit."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "field 'model' is required and must be a string", "model", "invalid_value")
    if model not in models:
        raise RequestError(404, f"unknown model {model!r}; available: {models}", "model", "model_not_found")
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > limits["max_tokens_limit"]:
            raise RequestError(400, f"'{field}' is {value}, above this server's limit of "
                               f"{limits['max_tokens_limit']}", field, "max_tokens_exceeded")
    return model


from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

api = FastAPI(title="EAPO OpenAI-compatible server")


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


@serve.ingress(api)
class Ingress:
    """Authentication, request validation and routing by the request's ``model`` field."""

    def __init__(self, model_server, models: list[str], api_key: str | None, limits: dict):
        self.server, self.models, self.api_key, self.limits = model_server, models, api_key, limits
        self.created = int(time.time())

    async def _route(self, request: Request, kind: str) -> JSONResponse:
        try:
            _check_auth(self.api_key, request.headers.get("authorization"))
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"invalid JSON body: {exc}", None, "invalid_json") from None
            model = _precheck(body, self.models, self.limits)
            handle = self.server.options(multiplexed_model_id=model)
            status, payload = await handle.generate.remote(kind, body)
            return JSONResponse(payload, status_code=status)
        except RequestError as err:
            return _error(err)
        except Exception as exc:  # noqa: BLE001 - engine failure: report it, keep serving
            msg = f"internal error while serving the request: {type(exc).__name__}: {exc}"
            return JSONResponse({"error": {"message": msg[:2000], "type": "server_error", "param": None,
                                           "code": None}}, status_code=500)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._route(request, "completions")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._route(request, "chat")

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        try:
            _check_auth(self.api_key, request.headers.get("authorization"))
        except RequestError as err:
            return _error(err)
        data = [{"id": m, "object": "model", "created": self.created, "owned_by": "eapo"} for m in self.models]
        return {"object": "list", "data": data}

    @api.get("/health")
    async def health(self):
        return {"status": "ok", "models": self.models}


def _pythonpath() -> str:
    """PYTHONPATH that makes this repository importable in replicas (single-node clusters;
    multi-node clusters ship it with ``runtime_env.working_dir``, see configs/serve/cluster.yaml)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def build_app(cfg: Any) -> serve.Application:
    """The Serve application for ``cfg`` (a ``ServeConfig``, dict or DictConfig)."""
    cfg = to_serve_config(cfg)
    models = cfg.models()
    limits = {"max_tokens_limit": cfg.max_tokens_limit, "max_n": cfg.max_n, "max_logprobs": cfg.max_logprobs}
    env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.engine.kv_cache_space_gb), "PYTHONPATH": _pythonpath()}
    server = serve.deployment(
        _model_server_class(cfg.max_models_per_replica), name="ModelServer",
        autoscaling_config=dataclasses.asdict(cfg.autoscaling),
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.replica_num_cpus, "runtime_env": {"env_vars": env}},
    ).bind(models, dataclasses.asdict(cfg.engine), limits)
    ingress = serve.deployment(
        Ingress, name="Ingress",
        max_ongoing_requests=max(256, cfg.max_ongoing_requests),
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus,
                           "runtime_env": {"env_vars": {"PYTHONPATH": _pythonpath()}}},
    ).bind(server, sorted(models), cfg.resolved_api_key(), limits)
    return ingress


def app_builder(args: dict) -> serve.Application:
    """Entry point for ``serve run`` / ``serve deploy`` config files (``import_path: serve.app:app_builder``)."""
    return build_app(args)
