"""Typed configuration objects from plain mappings: the one way every room turns YAML into a dataclass.

The values live in ``configs/`` (see :mod:`core.config_files`); the dataclasses that receive them carry
types and documentation, no values. :func:`build` checks a mapping against a dataclass: an unknown key,
a missing key or a value of the wrong type raises :class:`ConfigError` naming the dotted key, e.g.
``rollout.n: expected an integer, got 'abc'``. Range and consistency checks are the rooms' own
(``pipeline.config.validate``, ``AlgorithmConfig.validate``, ...), raised through :func:`require`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any


#: Keys that were renamed (old dotted key -> what it became), in every app's config: an old key in a config or on
#: the command line is rejected with its new name instead of a bare "unknown key" (:func:`unknown_key_message`).
RENAMED_KEYS: dict[str, str] = {
    **{f"model.{k}": f"model.tiny.{k}" for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                                 "intermediate_size", "max_position_embeddings")},
    "rollout.kv_cache_mb": "rollout.kv_cache_gb (GiB: 0.25 = the former 256 MB)",
    "engine.kv_cache_mb": "engine.kv_cache_gb (GiB: 0.25 = 256 MB)",
    "engine.max_num_seqs": "engine.extra.max_num_seqs (other vLLM arguments go under engine.extra)",
    "engine.max_logprobs": "engine.extra.max_logprobs (other vLLM arguments go under engine.extra)",
}


def closest(key: str, valid) -> list[str]:
    """The dotted keys of ``valid`` whose last part is closest to ``key``'s (difflib ratio >= 0.7), best first:
    ``trainer.totl_steps`` -> ``trainer.total_steps``."""
    by_name: dict[str, list[str]] = {}
    for full in valid:
        by_name.setdefault(full.rsplit(".", 1)[-1], []).append(full)
    names = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=3, cutoff=0.7)
    return [full for name in names for full in by_name[name]]


def unknown_key_message(key: str, valid) -> str:
    """Why dotted ``key`` is refused, given the ``valid`` dotted keys at its level: its new name when it was
    renamed (:data:`RENAMED_KEYS`), else the closest valid keys, else all of them."""
    if key in RENAMED_KEYS:
        return f"unknown key: renamed to {RENAMED_KEYS[key]}"
    near = closest(key, valid)
    if near:
        return f"unknown key; did you mean {' or '.join(near)}?"
    return f"unknown key; valid here: {', '.join(sorted(valid))}"


class ConfigError(ValueError):
    """Invalid configuration. ``key`` is the dotted key at fault; ``str()`` is ``"<key>: <why>"``."""

    def __init__(self, key: str, why: str):
        super().__init__(f"{key}: {why}")
        self.key, self.why = key, why

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key moved under ``prefix`` (``clip_low`` -> ``algorithm.clip_low``)."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.why)


def require(ok: bool, key: str, why: str) -> None:
    """Raise ``ConfigError(key, why)`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, why)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_arg(tp):
    """X for ``Optional[X]`` / ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(tp):
            return args[0]
    return None


def coerce(value: Any, tp, key: str):
    """``value`` checked against the annotation ``tp`` (int, float, bool, str, Optional, list, tuple, dict,
    Any, a nested dataclass); numbers written as strings (YAML 1.1 reads ``1e-6`` as a string) become
    numbers. Raises :class:`ConfigError` naming ``key``."""
    if tp is Any or tp is object:
        return value
    inner = _optional_arg(tp)
    if inner is not None:
        return None if value is None else coerce(value, inner, key)
    if value is None:
        raise ConfigError(key, "must be set (got null)")
    if _is_dataclass_type(tp):
        return build(tp, value, key)
    origin = typing.get_origin(tp) or tp
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value) if tp is float else int(value)
            except ValueError:
                raise ConfigError(key, f"expected {'a number' if tp is float else 'an integer'}, got {value!r}") from None
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        if tp is int:
            if value != int(value):
                raise ConfigError(key, f"expected an integer, got {value!r}")
            return int(value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, Mapping)) or not hasattr(value, "__iter__"):
            raise ConfigError(key, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, item, _join(key, str(k))) for k, v in value.items()}
    raise TypeError(f"{key}: annotation {tp!r} is not supported by core.typed.coerce")


def plain(value):
    """Mapping / list-like (dict, OmegaConf DictConfig / ListConfig) -> dict / list, recursively."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value


def build(cls, data: Mapping, where: str = ""):
    """An instance of dataclass ``cls`` from ``data``: every field must be given (the values live in
    ``configs/``), no other key is allowed, each value is coerced to its field's type (nested dataclasses
    recursively). ``where`` is the dotted key of ``data`` in error messages."""
    data = plain(data)
    if not isinstance(data, Mapping):
        raise ConfigError(where or cls.__name__, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = _join(where, unknown[0])
        why = unknown_key_message(key, [_join(where, n) for n in names])
        raise ConfigError(key, f"unknown key(s) {unknown}{why[len('unknown key'):]}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(_join(where, missing[0]), f"missing key(s) {missing} (their values belong in configs/)")
    return cls(**{n: coerce(data[n], hints[n], _join(where, n)) for n in names})


def to_dict(obj) -> dict:
    """A typed config object back to plain data (tuples become lists), e.g. for logging or YAML."""
    return plain(dataclasses.asdict(obj))
