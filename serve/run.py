"""CLI: ``python -m serve.run checkpoint=<dir>`` (or ``follow=<run_dir>``) serves the OpenAI API (configs/serve)."""
from __future__ import annotations

import os
import signal
import sys
import threading

from omegaconf import DictConfig, OmegaConf

from core.cli import app, fail
from core.typed import ConfigError
from serve.config import RUN_ONLY_KEYS

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "serve")


def start(cfg, ray_address: str | None = None) -> str:
    """Start Ray (if needed) and Serve, deploy the app and wait until every model answered; return the URL."""
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import to_serve_config

    cfg = to_serve_config(cfg)
    cfg.models()  # config errors surface before Ray starts
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False)
    app = build_app(cfg)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name=cfg.app_name, route_prefix="/")
    return f"http://{cfg.host}:{cfg.port}"


@app(CONFIG_DIR, "serve")
def main(cfg: DictConfig) -> None:
    """Deploy and, when ``blocking``, keep serving until interrupted."""
    data = OmegaConf.to_container(cfg, resolve=True)
    opts = {k: data.pop(k, None) for k in RUN_ONLY_KEYS}
    try:
        url = start(data, ray_address=opts["ray_address"])
    except ConfigError as exc:  # a key or value of configs/serve: one line, exit code 2, as every app
        fail(str(exc))
    except ValueError as exc:
        sys.exit(f"serve.run: {exc}")
    print(f"serving at {url}/v1 (models: GET {url}/v1/models, readiness: GET {url}/health)", flush=True)
    if opts["blocking"] in (None, True):
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # set after Ray/vLLM installed theirs
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        from ray import serve
        serve.shutdown()


if __name__ == "__main__":
    main()
