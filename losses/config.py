"""Algorithm configuration: a dataclass per algorithm family, built from a YAML mapping.

Unknown keys and invalid values raise ``ValueError`` whose message starts with the field name.
YAML 1.1 reads ``1e-6`` as a string, so numbers given as strings are coerced.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .advantages import known_estimators
from .aggregation import known_aggregations
from .kl import KL_ESTIMATORS


def to_plain(value):
    """Mapping / list-like (dict, OmegaConf DictConfig / ListConfig) -> dict / tuple, recursively."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return tuple(to_plain(v) for v in value)
    return value


def fail(field: str, message: str):
    """Raise ``ValueError("<field>: <message>")``."""
    raise ValueError(f"{field}: {message}")


def check_number(cfg, field: str, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, allow_none: bool = False, integer: bool = False):
    """Coerce ``cfg.<field>`` to float (int if ``integer``) and check lo ≤ v ≤ hi (lo < v if lo_open)."""
    v = getattr(cfg, field)
    if v is None:
        return None if allow_none else fail(field, "must be set (got null)")
    if isinstance(v, bool):
        fail(field, f"expected a number, got {v!r}")
    try:
        v = float(v)
    except (TypeError, ValueError):
        fail(field, f"expected a number, got {v!r}")
    if not math.isfinite(v) or (integer and v != int(v)):
        fail(field, f"expected a finite {'integer' if integer else 'number'}, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        fail(field, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        fail(field, f"must be <= {hi}, got {v}")
    setattr(cfg, field, int(v) if integer else v)


def check_bool(cfg, field: str) -> None:
    """``cfg.<field>`` must be a bool (YAML true/false), not 0/1 or a string."""
    if not isinstance(getattr(cfg, field), bool):
        fail(field, f"expected true or false, got {getattr(cfg, field)!r}")


def check_choice(cfg, field: str, choices) -> None:
    """``cfg.<field>`` must be one of ``choices``."""
    if getattr(cfg, field) not in choices:
        fail(field, f"unknown value {getattr(cfg, field)!r}; allowed: {sorted(choices)}")


def check_subset(cfg, field: str, choices) -> None:
    """``cfg.<field>`` must be a list of items from ``choices``; stored as a tuple."""
    v = getattr(cfg, field)
    v = (v,) if isinstance(v, str) else tuple(v or ())
    bad = [q for q in v if q not in choices]
    if bad:
        fail(field, f"unknown entries {bad}; allowed: {list(choices)}")
    setattr(cfg, field, v)


@dataclass
class AlgorithmConfig:
    """Keys shared by every algorithm (see configs/algorithm/*.yaml for their trade-offs).

    The last four act on data and are applied by the pipeline, not by ``losses``: DAPO dynamic
    sampling (arXiv 2503.14476; drop groups whose G rewards are all equal, see
    ``losses.advantages.informative_groups``, and top the step's batch up with at most
    ``max_sampling_rounds`` further rollout rounds) and DAPO's soft overlong punishment (reward +=
    ``overlong_penalty_factor`` · ``losses.reward_shaping.overlong_penalty(lengths, max_tokens,
    overlong_buffer)``; 0 = off; the buffer must not exceed the rollout's max_tokens).
    """

    name: str = ""
    advantage_estimator: str = "grpo"
    adv_eps: float = 1e-6
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = None
    aggregation: str = "token_mean"
    max_response_length: int | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 3
    overlong_buffer: int = 0
    overlong_penalty_factor: float = 1.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check and coerce every field; subclasses extend (call super)."""
        check_choice(self, "advantage_estimator", known_estimators())
        check_number(self, "adv_eps", 0.0, 1e-2)
        check_number(self, "clip_low", 0.0, 1.0)
        check_number(self, "clip_high", 0.0)
        check_number(self, "dual_clip", 1.0, lo_open=True, allow_none=True)
        check_choice(self, "aggregation", known_aggregations())
        check_number(self, "max_response_length", 1, allow_none=True, integer=True)
        check_number(self, "kl_coef", 0.0)
        check_choice(self, "kl_estimator", KL_ESTIMATORS)
        check_number(self, "entropy_coef", 0.0)
        check_bool(self, "dynamic_sampling")
        check_number(self, "max_sampling_rounds", 0, integer=True)
        check_number(self, "overlong_buffer", 0, integer=True)
        check_number(self, "overlong_penalty_factor", 0.0)

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> "AlgorithmConfig":
        """Build from a plain mapping; unknown keys -> ValueError naming them."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - allowed)
        if unknown:
            fail(unknown[0], f"unknown key(s) {unknown} for algorithm {mapping.get('name')!r}; "
                             f"allowed: {sorted(allowed)}")
        return cls(**mapping)
