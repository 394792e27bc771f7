"""Arguments as the command line and a notebook give them, turned into fakeprobe's objects:
``NAME=PATH`` weights, ``-b NAME:PATH`` backbones, self-blend settings, the settings of an
existing cache. Malformed values raise :class:`~fakeprobe.errors.InvalidOption`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from fakeprobe.errors import FakeprobeError, InvalidOption


def parse_weights(values: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``BACKBONE=PATH`` strings (or a mapping) as ``{backbone: path}``; every file must exist."""
    if isinstance(values, Mapping):
        values = [f"{k}={v}" for k, v in values.items()]
    weights = {}
    for value in values or ():
        name, sep, path = str(value).partition("=")
        if not sep or not name or not path:
            raise InvalidOption(f"{value!r}: use BACKBONE=PATH", "--weights")
        if not Path(path).is_file():
            raise InvalidOption(f"{path}: no such file", "--weights")
        weights[name] = path
    return weights


def backbones_and_weights(backbones: Iterable[str], weights: Iterable[str] | Mapping[str, str]
                          | None = None) -> tuple[tuple[str, ...], dict[str, str]]:
    """Backbone names and weight files; ``NAME:PATH`` is ``NAME`` with the weights
    ``NAME=PATH`` (``finetuned:NET.keras``)."""
    from fakeprobe.extractor.components import BACKBONES

    if isinstance(weights, Mapping):
        weights = [f"{k}={v}" for k, v in weights.items()]
    names, pairs = [], list(weights or ())
    for value in backbones:
        name, sep, path = value.partition(":")
        if sep and name in BACKBONES.names():
            if not path or not Path(path).is_file():
                raise InvalidOption(f"{value!r}: no such file {path!r}", "--backbone")
            names.append(name)
            pairs.append(f"{name}={path}")
        else:
            names.append(value)
    return tuple(dict.fromkeys(names)), parse_weights(pairs)


def blend_config(config: Path | str | Mapping[str, Any] | None = None, mask: str | None = None):
    """Self-blend settings: the defaults, or a JSON file (or mapping) of
    :class:`fakeprobe.synth.blend.BlendConfig` keys, with ``mask`` overriding its mask."""
    import dataclasses

    from fakeprobe.synth.blend import BlendConfig

    try:
        result = BlendConfig()
        if isinstance(config, Mapping):
            result = BlendConfig.from_dict(dict(config))
        elif config is not None:
            result = BlendConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8")))
        if mask is not None:
            result = dataclasses.replace(result, mask=mask)
    except (ValueError, TypeError) as exc:
        raise FakeprobeError(f"blend settings: {exc}") from None
    return result


def cache_settings(cache_path: Path | str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The extractor settings an existing cache holds for what ``given`` does not name (so
    that adding media or a backbone needs no repeat of the first run's options). Backbones not
    given are the cache's own. Nothing when there is no such cache (or it cannot be read: the
    extraction then says what is wrong with it)."""
    import dataclasses

    from fakeprobe.core.config import ExtractorConfig

    path = Path(cache_path)
    if not path.is_file():
        return {}
    from fakeprobe.features.cache import CacheReader

    try:
        with CacheReader(path) as reader:
            stored = reader.config.to_dict()
    except FakeprobeError:
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractorConfig)
                if f.default is not dataclasses.MISSING}
    inherited = {}
    for name, value in stored.items():
        if name in given or name not in defaults and name != "backbones":
            continue
        if name == "backbones":
            inherited[name] = tuple(value)
        elif value != defaults[name]:
            inherited[name] = value
    return inherited
