"""What a cache holds (``info``), what can run here (``components``), and feature sets derived
from a cache without decoding (``derive``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from fakeprobe.app._result import JsonResult, Wrapped
from fakeprobe.errors import FakeprobeError


@dataclass(frozen=True)
class InfoResult(JsonResult):
    """A cache's counts (per label, status, kind, dataset, method), feature sets, extractor
    config, failures and the items read with a caveat (``warnings``)."""

    cache: Path
    summary: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def to_dict(self) -> dict[str, Any]:
        return self.summary


def info(cache_path: Path | str) -> InfoResult:
    """Read a cache's summary (read-only)."""
    from fakeprobe.core.schema import READ_STATUSES
    from fakeprobe.features.cache import CacheReader, summarize

    summary = summarize(cache_path)
    with CacheReader(cache_path) as reader:  # items read with a caveat, e.g. a truncated video
        videos = reader.videos()
    summary["warnings"] = [
        {"id": str(vid), "status": str(status), "error": str(error)}
        for vid, status, error in zip(videos["id"], videos["status"], videos["error"])
        if status in READ_STATUSES and error]
    return InfoResult(Path(cache_path), summary)


@dataclass(frozen=True)
class ComponentsResult(JsonResult):
    """Every registered detector, backbone and head (name, whether it can run here, what is
    missing and how to install it, a description) and the bundled detector."""

    detectors: list[dict[str, Any]]
    backbones: list[dict[str, Any]]
    heads: list[dict[str, Any]]
    bundled_model: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detectors, "backbone": self.backbones, "head": self.heads,
                "bundled_model": self.bundled_model}


#: Component kinds, each with a registry keyed by name.
KINDS = ("detector", "backbone", "head")


def registries(*kinds: str) -> dict[str, Any]:
    """The component registries of ``kinds`` (default: all of :data:`KINDS`). Registering
    imports no network library; the heads' registry imports scikit-learn, so ask for it only
    when heads are wanted."""
    kinds = kinds or KINDS
    found: dict[str, Any] = {}
    if "detector" in kinds or "backbone" in kinds:
        from fakeprobe.extractor.components import BACKBONES, DETECTORS

        found.update(detector=DETECTORS, backbone=BACKBONES)
    if "head" in kinds:
        from fakeprobe.classifiers.heads import HEADS

        found["head"] = HEADS
    return {kind: found[kind] for kind in kinds}


def choices(kind: str) -> list[str]:
    """The names a choice accepts: a component kind's registered names (``detector``,
    ``backbone``, ``head``), or the frame-to-video rules (``aggregate``, ``smoothing``)."""
    if kind in ("aggregate", "smoothing"):
        from fakeprobe.classifiers.aggregate import AGGREGATORS, SMOOTHERS

        return list(AGGREGATORS if kind == "aggregate" else SMOOTHERS)
    return registries(kind)[kind].names()


def components() -> ComponentsResult:
    """List the registered components and which can run on this machine."""
    from fakeprobe.classifiers.model import bundled_model_info

    listed = {}
    for kind, registry in registries().items():
        listed[kind] = [
            {"name": name, "available": not registry.entry(name).missing(),
             "missing": registry.entry(name).missing(), "hint": registry.entry(name).hint,
             "description": registry.entry(name).description}
            for name in registry.names()
        ]
    return ComponentsResult(listed["detector"], listed["backbone"], listed["head"],
                            bundled_model_info())


class DeriveResult(Wrapped):
    """What a derivation did: per feature set (``feature_sets``) the items computed now, those
    already done, those whose base set is missing, its ``dim`` and stored config."""


def derive(cache_path: Path | str, *, temporal: Sequence[str] = (), landmarks: bool = False,
           log: Callable[[str], None] | None = None) -> DeriveResult:
    """Add video-level feature sets to a cache without decoding: ``landmarks`` (landmark
    stability per face track) and ``<base>-temporal`` for each cached set in ``temporal``.
    Items already done are skipped; returns the derivation summary (``to_dict()`` for JSON).
    ``KeyboardInterrupt`` propagates after the staged items are committed."""
    from fakeprobe.features.cache import writer as cache_writer
    from fakeprobe.features.temporal import LANDMARKS, TEMPORAL_SUFFIX, derive as run_derive

    names = ([LANDMARKS] if landmarks else []) + [f"{b}{TEMPORAL_SUFFIX}" for b in temporal]
    if not names:
        raise FakeprobeError("nothing to derive: give --landmarks and/or --temporal BASE")
    with cache_writer(cache_path, log=log):
        return DeriveResult(run_derive(cache_path, names))
