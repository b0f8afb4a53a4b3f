"""CLI: ``python -m serve.run checkpoint=<dir>`` starts the OpenAI-compatible server (Hydra config in configs/serve)."""
from __future__ import annotations

import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "serve")
RUN_ONLY_KEYS = ("ray_address", "blocking")


def start(cfg, ray_address: str | None = None, num_cpus: float | None = None) -> str:
    """Start Ray (if needed) and Serve, deploy the app; return the base URL."""
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import to_serve_config

    cfg = to_serve_config(cfg)
    if not ray.is_initialized():
        ray.init(address=ray_address, num_cpus=num_cpus, include_dashboard=False)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix)
    return f"http://{cfg.host}:{cfg.port}"


@hydra.main(config_path=CONFIG_DIR, config_name="serve", version_base=None)
def main(cfg: DictConfig) -> None:
    """Deploy and, when ``blocking``, keep serving until interrupted."""
    data = OmegaConf.to_container(cfg, resolve=True)
    run_opts = {k: data.pop(k, None) for k in RUN_ONLY_KEYS}
    url = start(data, ray_address=run_opts["ray_address"])
    from serve.config import to_serve_config

    print(f"serving {sorted(to_serve_config(data).models())} at {url}/v1", flush=True)
    if run_opts["blocking"] in (None, True):
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            from ray import serve
            serve.shutdown()


if __name__ == "__main__":
    main()
