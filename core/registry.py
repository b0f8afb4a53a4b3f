"""One registry helper for everything chosen by name in a config: algorithms, aggregations, advantage and
KL estimators (``losses``), benchmarks (``evaluation``).

    AGGREGATIONS = Registry("aggregation", key="aggregation")
    @AGGREGATIONS.register("token_mean")
    def token_mean(...): ...
    AGGREGATIONS.get("token_mean")   # unknown name -> ConfigError("aggregation: unknown aggregation ...")

A registry maps names to objects only; the values that configure them live in ``configs/``.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from core.typed import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects. ``kind`` names what is registered in messages, ``key`` the config key that
    selects an entry (the key an unknown-name error is raised for). ``load`` (optional) is called once
    before the first lookup, e.g. to import the modules that register themselves."""

    def __init__(self, kind: str, key: str, load: Callable[[], None] | None = None):
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}
        self._load, self._loaded = load, load is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._load()

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; the same name for another object is an error."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = obj
        return obj

    def remove(self, name: str) -> None:
        """Forget ``name`` (e.g. a test's temporary entry); unknown names are ignored."""
        self._entries.pop(name, None)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda obj: self.add(name, obj)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises ``ConfigError(key, "unknown <kind> ...; known: [...]")``."""
        self._ensure_loaded()
        if name not in self._entries:
            raise ConfigError(self.key, f"unknown {self.kind} {name!r}; known: {self.names()}")
        return self._entries[name]

    __getitem__ = get

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
