"""CLI: ``python -m evaluation.run endpoint=http://... model=<id> benchmarks=[aime24,math500]``.

Re-running the same command resumes: the default output (and cache) directory is derived from the
endpoint, the model and the benchmarks. Config or endpoint problems end with one line, no traceback.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval")


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run the evaluation and print the markdown table."""
    from evaluation.report import markdown_table
    from evaluation.runner import evaluate
    from evaluation.sampler import EndpointError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        results = evaluate(OmegaConf.to_container(cfg, resolve=True))
    except (EndpointError, ValueError) as exc:
        sys.exit(f"evaluation: {exc}")
    print(markdown_table(results))
    print("outputs:", results["outputs"])


if __name__ == "__main__":
    main()
