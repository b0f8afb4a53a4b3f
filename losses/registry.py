"""Algorithm registry: ``@register(name, **defaults)`` on an ``Algorithm`` subclass, ``build_algorithm(cfg)``.

Adding an algorithm = one module in ``losses/algorithms/`` (auto-imported) + ``configs/algorithm/<name>.yaml``.
Precedence of values: the class's Config defaults < ``register`` defaults < the YAML mapping.

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

from .config import fail, to_plain

_REGISTRY: dict[str, tuple[type, dict]] = {}


def register(name: str, **defaults):
    """Class decorator: make ``cls`` buildable as ``name`` with preset config ``defaults``."""

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"name: algorithm {name!r} registered twice")
        _REGISTRY[name] = (cls, dict(defaults))
        return cls

    return wrap


def _load_algorithms() -> None:
    from . import algorithms

    for mod in pkgutil.iter_modules(algorithms.__path__):
        importlib.import_module(f"{algorithms.__name__}.{mod.name}")


def known_algorithms() -> list[str]:
    """Sorted registered algorithm names."""
    _load_algorithms()
    return sorted(_REGISTRY)


def build_algorithm(cfg: Mapping):
    """Algorithm instance from a mapping (dict / DictConfig) that contains ``name``.

    Unknown name -> ValueError listing the known names; unknown or invalid keys -> ValueError
    naming the field.
    """
    plain = to_plain(cfg)
    if not isinstance(plain, dict):
        fail("name", f"expected a mapping with a 'name' key, got {type(cfg).__name__}")
    name = plain.get("name")
    known = known_algorithms()
    if name not in _REGISTRY:
        fail("name", f"unknown algorithm {name!r}; known: {known}")
    cls, defaults = _REGISTRY[name]
    return cls(cls.Config.from_mapping({**defaults, **plain}))
