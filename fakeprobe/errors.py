"""Typed errors. The CLI turns any :class:`FakeprobeError` into one line and exit code 1."""

from __future__ import annotations


class FakeprobeError(Exception):
    """Base class of every error fakeprobe raises on purpose."""


class ConfigError(FakeprobeError, ValueError):
    """An invalid configuration or argument: a value out of range or of the wrong type, an
    unknown choice, options that conflict. A ``ValueError`` too, so callers that catch that
    keep working."""


class UnknownComponent(FakeprobeError):
    """A detector, backbone or head name that no registry holds."""


class MissingDependency(FakeprobeError):
    """A registered component whose optional dependency is not installed."""


class WeightsError(FakeprobeError):
    """Model weights that are absent, unreadable or fail their checksum."""


class MediaError(FakeprobeError):
    """A media item that cannot be read. ``status`` is the code stored in the cache."""

    def __init__(self, message: str, status: str = "decode_error") -> None:
        super().__init__(message)
        self.status = status


class LayoutError(FakeprobeError):
    """An input whose layout (folder, FF++ tree, DFDC metadata, CSV) cannot be understood."""


class CacheError(FakeprobeError):
    """An HDF5 cache that cannot be opened or written."""


class SchemaMismatch(CacheError):
    """A cache written with another schema version."""


class ConfigMismatch(CacheError):
    """A cache whose stored extractor config differs from the one asked for."""


class CacheCorrupt(CacheError):
    """A file that is not a whole fakeprobe cache: not HDF5, a missing or short dataset, an
    attribute that does not parse, a column of the wrong type."""


class CacheLocked(CacheError):
    """A cache another process is writing (``extract`` or ``derive`` holds its lock)."""


class OutputError(FakeprobeError):
    """An output path that is refused (one of the inputs, an existing file of another kind) or
    cannot be written (read-only folder, disk full, name too long)."""


class InvalidOption(ConfigError):
    """An argument that is malformed or conflicts with another, where the command line has an
    option for it (``option`` names it as the command line spells it, e.g. ``--weights``; the
    CLI reports it as a usage error, exit code 2)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option
