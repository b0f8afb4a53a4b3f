"""CLI: ``python -m evaluation.run endpoint=http://... model=<id> benchmarks=[aime24,math500]``.

Re-running the same command resumes: the default output (and cache) directory is derived from the
endpoint, the model and the benchmarks. Config problems (a key, a value, an output directory that cannot be
created) end with one line ``error: ...`` and exit code 2, an unreachable endpoint with one line and exit code 1.
"""
from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig, OmegaConf

from core.cli import app, fail
from core.typed import ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval")


@app(CONFIG_DIR, "eval")
def main(cfg: DictConfig) -> None:
    """Run the evaluation and print the markdown table."""
    from evaluation.report import markdown_table
    from evaluation.runner import evaluate
    from evaluation.sampler import EndpointError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        results = evaluate(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        fail(str(exc))
    except (EndpointError, ValueError) as exc:
        sys.exit(f"evaluation: {exc}")
    print(markdown_table(results))
    print("outputs:", results["outputs"])


if __name__ == "__main__":
    main()
