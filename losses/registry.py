"""Algorithm registry: ``@register(name)`` on an ``Algorithm`` subclass, ``build_algorithm(cfg)``.

Adding an algorithm = one module in ``losses/algorithms/`` (auto-imported) + ``configs/algorithm/<name>.yaml``
(Hydra ``defaults: [base]`` or its family's file, then the keys that differ). The registry maps names to
classes only: every value comes from the YAML. ``build_algorithm({"name": "dapo", "clip_high": 0.3})`` composes
``configs/algorithm/dapo.yaml`` (``core.config_files``, the same values Hydra composes for ``algorithm=dapo``)
and applies the given keys on top.

What the pipeline drives on the built ``Algorithm`` (see ``losses.base``): ``compute_advantages`` on
rewards; per RL step ``begin_step(step, total_steps)`` (training progress, e.g. A3PO's decay) before
``shape_credit`` (old-policy entropy/log-probs; may run a ``torch.distributed`` collective, so all
data-parallel ranks call it); per micro-batch ``policy_loss``. Class-level declarations it reads:
``requires_signed_rewards`` (±1 rewards needed). Data-side keys of every config (``dynamic_sampling``,
``max_sampling_rounds``, ``overlong_buffer``, ``overlong_penalty_factor``) are applied by the pipeline.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from core.config_files import CONFIG_DIR, compose_option
from core.registry import Registry
from core.typed import plain

from .config import AlgorithmConfig, fail


def _load_algorithms() -> None:
    from . import algorithms

    for mod in pkgutil.iter_modules(algorithms.__path__):
        importlib.import_module(f"{algorithms.__name__}.{mod.name}")


ALGORITHMS: Registry = Registry("algorithm", key="name", load=_load_algorithms)


def register(name: str):
    """Class decorator: make ``cls`` buildable as ``name`` (its values: ``configs/algorithm/<name>.yaml``)."""
    return ALGORITHMS.register(name)


def known_algorithms() -> list[str]:
    """Sorted registered algorithm names."""
    return ALGORITHMS.names()


def algorithm_defaults(name: str) -> dict:
    """Every key of ``configs/algorithm/<name>.yaml`` as Hydra composes it; {} if there is no such file."""
    if not (CONFIG_DIR / "algorithm" / f"{name}.yaml").is_file():
        return {}
    return compose_option("algorithm", name)


def build_algorithm(cfg):
    """Algorithm instance from an :class:`AlgorithmConfig` (already validated) or a mapping (dict /
    DictConfig) that contains ``name``: the mapping's keys over the values of the algorithm's YAML.

    Unknown name -> ``ConfigError`` (a ValueError) listing the known names; unknown, missing or invalid
    keys -> ``ConfigError`` naming the field.
    """
    if isinstance(cfg, AlgorithmConfig):
        return ALGORITHMS.get(cfg.name)(cfg)
    given = plain(cfg)
    if not isinstance(given, Mapping):
        fail("name", f"expected a mapping with a 'name' key, got {type(cfg).__name__}")
    cls = ALGORITHMS.get(given.get("name"))
    return cls(cls.Config.from_mapping({**algorithm_defaults(given["name"]), **given}))
