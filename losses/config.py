"""Algorithm configuration: a dataclass per algorithm family, built from a YAML mapping.

The dataclasses carry types, documentation and validation; the values live in ``configs/algorithm/``
(``base.yaml`` plus one file per algorithm). Unknown, missing and invalid keys raise
:class:`~core.typed.ConfigError` (a ``ValueError``) whose message starts with the field name.
YAML 1.1 reads ``1e-6`` as a string, so numbers given as strings are coerced.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from core.typed import ConfigError, build

from .advantages import known_estimators
from .aggregation import known_aggregations
from .kl import KL_ESTIMATORS

#: What DAPO dynamic sampling compares within a group (``filter_metric``; applied by ``actors.dynamic_sampling``).
FILTER_METRICS = ("accuracy", "reward")


def fail(field: str, message: str):
    """Raise ``ConfigError`` (a ``ValueError``) with the message ``"<field>: <message>"``."""
    raise ConfigError(field, message)


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
    """Keys shared by every algorithm (values and trade-offs: configs/algorithm/base.yaml).

    The last five act on data and are applied by the pipeline, not by ``losses``: DAPO dynamic
    sampling (arXiv 2503.14476; drop groups whose G responses are all alike by ``filter_metric`` —
    ``accuracy``: all correct or all wrong, ``reward``: equal shaped rewards, see
    ``actors.dynamic_sampling`` — and top the step's batch up with at most ``max_sampling_rounds``
    further rollout rounds) and DAPO's soft overlong punishment (reward += ``overlong_penalty_factor`` ·
    ``losses.reward_shaping.overlong_penalty(lengths, max_tokens, overlong_buffer)``; 0 = off; the
    buffer must not exceed the rollout's max_tokens).
    """

    name: str
    advantage_estimator: str
    adv_eps: float
    clip_low: float
    clip_high: float
    dual_clip: float | None
    aggregation: str
    max_response_length: int | None
    kl_coef: float
    kl_estimator: str
    entropy_coef: float
    dynamic_sampling: bool
    filter_metric: str
    max_sampling_rounds: int
    overlong_buffer: int
    overlong_penalty_factor: float

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
        if self.max_response_length is not None and self.aggregation != "seq_mean_token_sum_norm":
            fail("max_response_length", f"{self.max_response_length} is only read by aggregation="
                                        f"seq_mean_token_sum_norm (Dr.GRPO's constant L), got aggregation={self.aggregation!r}")
        check_number(self, "kl_coef", 0.0)
        check_choice(self, "kl_estimator", KL_ESTIMATORS)
        check_number(self, "entropy_coef", 0.0)
        check_bool(self, "dynamic_sampling")
        check_choice(self, "filter_metric", FILTER_METRICS)
        check_number(self, "max_sampling_rounds", 0, integer=True)
        check_number(self, "overlong_buffer", 0, integer=True)
        check_number(self, "overlong_penalty_factor", 0.0)

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> "AlgorithmConfig":
        """Build from a mapping that holds every key (``core.typed.build``: unknown, missing or mistyped
        keys raise ``ConfigError`` naming them), then :meth:`validate`."""
        return build(cls, mapping)
