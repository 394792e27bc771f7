"""Named components (detectors, backbones, heads) keyed by name.

A component whose optional dependency is missing stays listed but cannot be created; asking for
it raises :class:`MissingDependency` with the pip command that installs it. Registration imports
nothing heavy: factories import TensorFlow, dlib and friends inside themselves.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

from fakeprobe.errors import ConfigError, MissingDependency, UnknownComponent

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    requires: tuple[str, ...] = ()
    hint: str = ""
    description: str = ""

    def missing(self) -> list[str]:
        """Importable module names this entry needs that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


@dataclass
class Registry(Generic[T]):
    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(
        self,
        name: str,
        *,
        requires: tuple[str, ...] = (),
        hint: str = "",
        description: str = "",
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, tuple(requires), hint, description)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def available(self) -> list[str]:
        return [n for n, e in sorted(self._entries.items()) if not e.missing()]

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponent(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **kwargs) -> T:
        entry = self.entry(name)
        missing = entry.missing()
        if missing:
            hint = f" ({entry.hint})" if entry.hint else ""
            raise MissingDependency(
                f"{self.kind} {name!r} needs {', '.join(missing)}, which is not installed{hint}"
            )
        return entry.factory(**kwargs)
