"""The Serve application: ``build_openai_app`` over one ``LLMConfig`` per model, behind our ``Guard``.

Ray Serve LLM provides the OpenAI routes (completions, chat with the checkpoint's template, streaming,
``n``, logprobs, ``echo``), their validation and error shapes, one autoscaled ``LLMServer`` deployment
per model and replica restarts on failed health checks; ``serve.models`` and ``serve.guard`` add ours.
"""
from __future__ import annotations

from typing import Any

from serve.config import to_serve_config


def build_app(cfg: Any):
    """The Serve application for ``cfg`` (a ``ServeConfig``, dict or DictConfig)."""
    from ray.serve.llm import build_openai_app

    from serve.guard import GuardedIngress
    from serve.models import llm_configs

    cfg = to_serve_config(cfg)
    limits = cfg.limits
    guard = {"api_key": cfg.resolved_api_key(), "max_body_bytes": limits.max_body_bytes,
             "max_sequences": limits.max_sequences, "max_tokens": limits.max_tokens}
    return build_openai_app({
        "llm_configs": llm_configs(cfg),
        "ingress_cls_config": {"ingress_cls": GuardedIngress, "ingress_extra_kwargs": {
            "guard": guard, "probe_timeout_s": cfg.health.probe_timeout_s}},
        "ingress_deployment_config": {"ray_actor_options": {"num_cpus": cfg.ingress_cpus}},
    })


def app_builder(args: dict):
    """``serve run`` / ``serve deploy`` entry point (``import_path: serve.app:app_builder``; args = serve.yaml fields)."""
    return build_app(args)
