"""Loading one registered backbone outside an extraction run, with its weights verified.

Explanations, fine-tuning checks and the benchmarks need a backbone on its own; they all build
it here. The backbone's own constructor checks shipped weights against their pinned SHA-256
(:func:`fakeprobe.core.checksums.verify_sha256`); ``expected``, the feature config a cache or a
model recorded for this feature set, then pins the rest: a backbone whose weights digest, crop
geometry, dimension or any other recorded setting differs is refused, so features are never
mixed with those of other weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fakeprobe.errors import ConfigMismatch
from fakeprobe.extractor.base import BACKBONES, Backbone

#: Batch size of a backbone loaded on its own, when none is given.
DEFAULT_BATCH_SIZE = 32


def config_differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The settings two configs of one feature set disagree on, as ``key: expected vs actual``
    lines; keys only one of them holds are not compared (older caches record fewer)."""
    return [f"{key}: {expected[key]!r} vs {actual[key]!r}"
            for key in sorted(set(expected) & set(actual)) if expected[key] != actual[key]]


def load_backbone(name: str, *, weights: str | Path | None = None, device: str = "auto",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  expected: Mapping[str, Any] | None = None) -> Backbone:
    """The registered backbone ``name``, built on ``device`` from ``weights`` (``None``: the
    shipped, checksum-verified ones).

    ``expected``: the feature config recorded when the features were made (a cache's feature
    set, a model's ``feature_configs[name]``); any recorded setting the loaded backbone does not
    share raises :class:`~fakeprobe.errors.ConfigMismatch`, which says to pass the same weights.
    Raises :class:`~fakeprobe.errors.UnknownComponent` for an unknown name,
    :class:`~fakeprobe.errors.MissingDependency` when its package is missing and
    :class:`~fakeprobe.errors.WeightsError` when its weights fail their checksum.
    """
    backbone = BACKBONES.create(name, device=device,
                                weights=None if weights is None else str(weights),
                                batch_size=batch_size)
    if expected is not None:
        differences = config_differences(expected, backbone.config())
        if differences:
            raise ConfigMismatch(
                f"backbone {name!r} here differs from the one the features were made with "
                f"({'; '.join(differences)}; recorded vs here): pass the same weights "
                f"(--weights {name}=PATH)")
    return backbone
