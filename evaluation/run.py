"""CLI: ``python -m evaluation.run endpoint=http://... model=<id> benchmarks=[aime24,math500]``."""
from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval")


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run the evaluation and print the markdown table."""
    from hydra.core.hydra_config import HydraConfig

    from evaluation.report import markdown_table
    from evaluation.runner import evaluate

    cfg = OmegaConf.to_container(cfg, resolve=True)
    if not cfg.get("output_dir"):
        cfg["output_dir"] = HydraConfig.get().runtime.output_dir
    results = evaluate(cfg)
    print(markdown_table(results))
    print("outputs:", results["outputs"])


if __name__ == "__main__":
    main()
