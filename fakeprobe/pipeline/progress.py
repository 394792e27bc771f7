"""What an extraction run reports: its summary and the progress callback the CLI shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from fakeprobe.datasets import MediaItem


@dataclass
class ExtractSummary:
    """What a run did, for the terminal, ``--json`` and benchmarks."""

    cache: str
    found: int = 0
    extracted: int = 0
    features_added: int = 0
    already_done: int = 0
    failed: int = 0
    rows: int = 0
    faces: int = 0
    committed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    #: Seconds per stage. ``decode``, ``detect`` and ``align`` are summed over the worker threads
    #: (they may add up to more than the wall time); ``embed:<name>``, ``stage`` and ``commit``
    #: run in the main thread; ``main_wait`` is the main thread waiting for workers (when it is
    #: a large share of the run, decoding and detection are what limits it).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    #: Items extracted with a caveat (a truncated video: the frames before the damage are
    #: used), as ``{"id", "warning"}``; the warning is also the item's ``error`` in the cache.
    warnings: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one item is usable in the cache after this run."""
        return self.extracted + self.features_added + self.already_done > 0

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["items_per_second"] = (
            (self.extracted + self.features_added + self.failed) / self.seconds
            if self.seconds > 0 else 0.0
        )
        return data


class Reporter(Protocol):
    """Receives progress; the CLI shows it as a progress bar."""

    def start(self, total: int) -> None: ...

    def advance(self, item: MediaItem, status: str, message: str = "") -> None: ...


class Silent:
    """A :class:`Reporter` that shows nothing (library callers)."""

    def start(self, total: int) -> None:
        pass

    def advance(self, item: MediaItem, status: str, message: str = "") -> None:
        pass
