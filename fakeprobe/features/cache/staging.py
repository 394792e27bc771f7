"""Staging: each finished item is written whole to ``<cache>.staging/`` before any commit.

A staged file is written to a temporary name (naming the writing process), flushed, then
renamed, so it is whole or absent. It carries the settings of the writer session that staged it
(see :func:`~fakeprobe.features.cache.lock.run_settings`), so a commit can tell whether it was
made like the cache's other items. A staged file that does not read is set aside in
``rejected/``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fakeprobe.core.schema import LABEL_CODES
from fakeprobe.errors import CacheCorrupt, OutputError
from fakeprobe.features.cache.lock import _session, staging_dir
from fakeprobe.features.cache.schema import _FRAME_COLUMNS, FrameRows, StagedItem, VideoRecord
from fakeprobe.fileio import WRITE_ERRNOS


def stage(cache_path: Path, item: StagedItem, settings: dict[str, Any] | None = None) -> Path:
    """Write one item atomically to the staging folder; return its path.

    The item carries the settings of the writer session that stages it (see :func:`writer`),
    so a later commit can tell whether it was made like the cache's other items; a process
    that stages for another's session (a cluster worker) passes its ``settings``."""
    cache_path = Path(cache_path)
    folder = staging_dir(cache_path)
    folder.mkdir(parents=True, exist_ok=True)
    session = _session(cache_path)
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({"kind": item.kind, "record": asdict(item.record),
                                     "features": sorted(item.features),
                                     "settings": settings if settings is not None
                                     else session.settings if session else None})),
    }
    if item.rows is not None:
        arrays.update({f"rows__{k}": v.astype(str) if v.dtype == object else v
                       for k, v in item.rows.columns().items()})  # strings without pickle
    for name, values in item.features.items():
        arrays[f"feat__{name}"] = np.asarray(values, dtype=np.float32)
    if item.crops is not None:
        arrays["crops"] = np.asarray(item.crops, dtype=np.uint8)
    name = f"{_dt.datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    final = folder / f"{name}.npz"
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise OutputError(f"{folder}: cannot stage {item.record.id} ({exc.strerror or exc}); "
                              f"the cache is left as it was and the items staged before are "
                              "kept") from None
        raise
    return final


def load_staged(path: Path) -> StagedItem:
    """One staged item; :class:`CacheCorrupt` when the file is not a whole staged item."""
    return _load_staged(path)[0]


def _load_staged(path: Path) -> tuple[StagedItem, dict[str, Any] | None]:
    """A staged item and the settings it was made with (``None`` when it carries none)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            rows = None
            if "rows__frame_index" in data.files:
                rows = FrameRows(**{name: np.asarray(data[f"rows__{name}"], dtype=dtype)
                                    for name, (dtype, _) in _FRAME_COLUMNS.items()
                                    if name != "video" and (name != "augment" or
                                                            "rows__augment" in data.files)})
            features = {str(name): np.asarray(data[f"feat__{name}"], dtype=np.float32)
                        for name in meta["features"]}
            crops = data["crops"] if "crops" in data.files else None
        record = VideoRecord(**meta["record"])
        kind = meta["kind"]
        if kind not in ("video", "features") or record.label not in LABEL_CODES:
            raise ValueError(f"kind {kind!r}, label {record.label!r}")
        if rows is not None:
            shapes = {name: np.shape(rows.columns()[name]) for name in _FRAME_COLUMNS
                      if name != "video"}
            if any(shape[:1] != (len(rows),) or shape[1:] != _FRAME_COLUMNS[name][1]
                   for name, shape in shapes.items()):
                raise ValueError(f"row columns of shapes {shapes}")
        count = len(rows) if rows is not None else None
        for name, values in features.items():
            if values.ndim != 2 or (count is not None and len(values) != count):
                raise ValueError(f"feature set {name!r} of shape {values.shape}")
        if crops is not None and (crops.ndim != 4 or len(crops) != count):
            raise ValueError(f"crops of shape {crops.shape}")
        settings = meta.get("settings")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile) as exc:
        raise CacheCorrupt(f"{path}: not a whole staged item ({exc.__class__.__name__}: "
                           f"{exc})") from None
    return StagedItem(record, kind, rows, features, crops), settings


def staged_files(cache_path: Path) -> list[Path]:
    """Whole staged items, oldest first (nothing is removed: see :func:`writer`)."""
    folder = staging_dir(cache_path)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.npz"))


def _set_aside(path: Path, reason: str, log: Callable[[str], None]) -> None:
    """Move a staged file that does not read into ``rejected/`` (never retried, kept for a
    look) and say so in one line."""
    rejected = path.parent / "rejected"
    try:
        rejected.mkdir(exist_ok=True)
        os.replace(path, rejected / path.name)
        where = f"moved to {rejected}"
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        where = "deleted"
    log(f"set aside a staged file that does not read ({reason}); {where}")


