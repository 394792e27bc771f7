"""What a cache holds and how its structure is checked: columns, records, layout, schema.

Schema version 2 is version 1's layout plus ``/commits``, written in place under a journal
(see :mod:`~fakeprobe.features.cache.journal`): a fakeprobe that knows only version 1 would not
roll back an interrupted commit, so it must refuse the file, hence the new number. Version 1
files are read as they are and become version 2 on their first commit.

Version 3 adds ``/frames/augment``, the name of the transform that made each augmented row
(``extract --augment``), ``""`` on original rows: a fakeprobe that knows only version 2 would
score augmented rows as real frames, so it must refuse the file. Versions 1 and 2 hold only
original rows and are read as such; their next commit adds the column (all ``""``).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fakeprobe import __version__
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.schema import LABEL_NAMES, READ_STATUSES
from fakeprobe.errors import CacheCorrupt, ConfigMismatch, SchemaMismatch

SCHEMA_VERSION = 3
#: Versions this fakeprobe reads (an older file is upgraded in place by its next commit).
READABLE_VERSIONS = (1, 2, 3)
#: The frame column added by version 3; older files read as all ``""`` (original rows).
AUGMENT_COLUMN = "augment"
#: Failures are tried again on every run: a file may have appeared, been repaired or replaced
#: (a decode error is not a property of a path). A read item is never re-extracted.


def retried(status: str) -> bool:
    """Whether an item cached with ``status`` is extracted again by the next run."""
    return status not in READ_STATUSES


_STR = h5py.string_dtype("utf-8")
_VIDEO_COLUMNS: dict[str, Any] = {
    "id": _STR, "path": _STR, "kind": _STR, "label": np.int8, "group": _STR, "dataset": _STR,
    "method": _STR, "fps": np.float64, "width": np.int32, "height": np.int32,
    "n_frames": np.int64, "status": _STR, "error": _STR, "row_start": np.int64,
    "row_count": np.int64,
}
_FRAME_COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "video": (np.int32, ()), "frame_index": (np.int64, ()), "timestamp": (np.float64, ()),
    "box": (np.float32, (4,)), "landmarks": (np.float32, (5, 2)), "score": (np.float32, ()),
    "track": (np.int32, ()), "has_face": (np.bool_, ()), AUGMENT_COLUMN: (_STR, ()),
}
#: ``/commits``, one row per commit (version 2): when it finished, the items and rows it
#: added, and the fakeprobe that wrote it.
_COMMIT_COLUMNS: dict[str, Any] = {"finished": _STR, "items": np.int64, "rows": np.int64,
                                   "fakeprobe_version": _STR}


def compatible_versions(version: int) -> tuple[int, ...]:
    """The cache schema versions whose rows and features mean what they mean in ``version``
    (versions 1 and 2 differ only in how commits are written; version 3 only marks augmented
    rows, which older versions never hold)."""
    return READABLE_VERSIONS if version in READABLE_VERSIONS else (version,)


@dataclass
class VideoRecord:
    """Per-item metadata as stored in ``/videos``."""

    id: str
    path: str
    kind: str
    label: str | None
    group: str
    dataset: str = ""
    method: str = ""
    fps: float = float("nan")
    width: int = 0
    height: int = 0
    n_frames: int = 0
    status: str = "ok"
    error: str = ""


@dataclass
class FrameRows:
    """The rows of one item, one per sampled frame and face."""

    frame_index: np.ndarray
    timestamp: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    score: np.ndarray
    track: np.ndarray
    has_face: np.ndarray
    #: Per row, the transform that made it (``extract --augment``); ``None``: all original.
    augment: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame_index)

    @classmethod
    def empty(cls) -> "FrameRows":
        return cls(**{name: np.zeros((0, *shape), dtype=dtype)
                      for name, (dtype, shape) in _FRAME_COLUMNS.items() if name != "video"})

    def columns(self) -> dict[str, np.ndarray]:
        values = {name: getattr(self, name) for name in _FRAME_COLUMNS if name != "video"}
        if values[AUGMENT_COLUMN] is None:
            values[AUGMENT_COLUMN] = [""] * len(self)
        return {name: np.asarray(value, dtype=_FRAME_COLUMNS[name][0])
                for name, value in values.items()}


@dataclass
class StagedItem:
    """One unit of work waiting to be committed.

    ``kind="video"``: a newly read item (record, rows, features, optional crops).
    ``kind="features"``: new feature sets for an item already in the cache (rows are not
    repeated; ``features`` arrays follow the item's cached rows).
    """

    record: VideoRecord
    kind: str = "video"
    rows: FrameRows | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    crops: np.ndarray | None = None


def _create_layout(h5: h5py.File, config: ExtractorConfig) -> None:
    h5.attrs["schema_version"] = SCHEMA_VERSION
    h5.attrs["fakeprobe_version"] = __version__
    h5.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    h5.attrs["extractor_config"] = json.dumps(config.to_dict())
    videos = h5.create_group("videos")
    for name, dtype in _VIDEO_COLUMNS.items():
        videos.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
    frames = h5.create_group("frames")
    for name, (dtype, shape) in _FRAME_COLUMNS.items():
        frames.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                              chunks=(1024, *shape))
    h5.create_group("features")
    _create_commits(h5)
    if config.keep_crops:
        size = config.keep_crops
        h5.create_dataset("crops", shape=(0, size, size, 3), maxshape=(None, size, size, 3),
                          dtype=np.uint8, chunks=(1, size, size, 3), compression="gzip",
                          compression_opts=4)


def _create_commits(h5: h5py.File) -> None:
    commits = h5.create_group("commits")
    for name, dtype in _COMMIT_COLUMNS.items():
        commits.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))


def _upgrade(h5: h5py.File) -> None:
    """Make an older file the current version (inside a commit, so atomically with it)."""
    version = int(h5.attrs["schema_version"])
    if version == 1:
        _create_commits(h5)
    if version < 3 and AUGMENT_COLUMN not in h5["frames"]:
        n_rows = h5["frames/video"].shape[0]
        column = h5["frames"].create_dataset(AUGMENT_COLUMN, shape=(n_rows,), maxshape=(None,),
                                             dtype=_STR, chunks=(1024,))
        if n_rows:
            column[:] = np.array([""] * n_rows, dtype=object)
    h5.attrs["schema_version"] = SCHEMA_VERSION


def _log_commit(h5: h5py.File, items: int, rows: int) -> None:
    values = {"finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "items": items, "rows": rows, "fakeprobe_version": __version__}
    for name, value in values.items():
        dataset = h5[f"commits/{name}"]
        dataset.resize(dataset.shape[0] + 1, axis=0)
        dataset[-1] = value


def _check_schema(h5: h5py.File, path: Path) -> int:
    """The file's schema version; :class:`SchemaMismatch` unless this fakeprobe reads it."""
    try:
        version = h5.attrs.get("schema_version")
        version = None if version is None else int(version)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CacheCorrupt(f"{path}: broken cache: its schema_version does not read ({exc})"
                           ) from None
    if version is None:
        raise SchemaMismatch(f"{path}: not a fakeprobe cache (no schema_version attribute)")
    if version not in READABLE_VERSIONS:
        raise SchemaMismatch(
            f"{path}: cache schema version {int(version)}, this fakeprobe reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; extract again into a new cache with "
            "this version"
        )
    return version


#: The dtype kind each column must have (``O``/``S``: strings; ``i``/``u``: integers; ``f``:
#: floats; ``b``: booleans).
_KINDS = {np.dtype(np.int8).kind: "iu", np.dtype(np.int32).kind: "iu",
          np.dtype(np.float64).kind: "f", np.dtype(np.bool_).kind: "b"}


def _kind_ok(dataset: h5py.Dataset, dtype: Any) -> bool:
    if dtype is _STR:
        return dataset.dtype.kind in "OS" and h5py.check_string_dtype(dataset.dtype) is not None
    return dataset.dtype.kind in _KINDS.get(np.dtype(dtype).kind, np.dtype(dtype).kind)


def _validate(h5: h5py.File, path: Path) -> None:
    """Check the structure cheaply (datasets present, types, lengths that agree, attributes
    that parse, rows of every item inside the rows); :class:`CacheCorrupt` names what is
    wrong. Reads the attributes and three short per-item columns, no frame data."""

    def broken(what: str) -> CacheCorrupt:
        return CacheCorrupt(f"{path}: broken cache: {what}; extract again into a new cache "
                            "(or restore a copy)")

    try:
        for group in ("videos", "frames", "features"):
            if not isinstance(h5.get(group), h5py.Group):
                raise broken(f"the /{group} group is missing")
        lengths = {}
        old = int(h5.attrs["schema_version"]) < 3  # no augment column
        for group, columns in (("videos", {k: (v, ()) for k, v in _VIDEO_COLUMNS.items()}),
                               ("frames", _FRAME_COLUMNS)):
            for name, (dtype, shape) in columns.items():
                if old and group == "frames" and name == AUGMENT_COLUMN:
                    continue
                dataset = h5[group].get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise broken(f"/{group}/{name} is missing")
                if dataset.shape[1:] != shape or not _kind_ok(dataset, dtype):
                    raise broken(f"/{group}/{name} holds {dataset.dtype} of shape "
                                 f"{dataset.shape}")
                lengths.setdefault(group, {})[name] = dataset.shape[0] if dataset.shape else -1
        if int(h5.attrs["schema_version"]) >= 2:
            commits = h5.get("commits")
            if not isinstance(commits, h5py.Group):
                raise broken("the /commits group is missing")
            for name, dtype in _COMMIT_COLUMNS.items():
                dataset = commits.get(name)
                if not isinstance(dataset, h5py.Dataset) or not _kind_ok(dataset, dtype):
                    raise broken(f"/commits/{name} is missing or of another type")
                lengths.setdefault("commits", {})[name] = dataset.shape[0]
        for group, sizes in lengths.items():
            if len(set(sizes.values())) != 1:
                detail = ", ".join(f"{k} {v}" for k, v in sizes.items())
                raise broken(f"the /{group} columns differ in length ({detail})")
        n_videos, n_rows = lengths["videos"]["id"], lengths["frames"]["video"]
        try:
            stored = json.loads(h5.attrs["extractor_config"])
            ExtractorConfig.from_dict(stored)
        except KeyError:
            raise broken("no extractor_config attribute") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise broken(f"the extractor_config attribute does not parse ({exc})") from None
        for name, group in h5["features"].items():
            data, done = group.get("data"), group.get("done")
            if not isinstance(data, h5py.Dataset) or not isinstance(done, h5py.Dataset):
                raise broken(f"feature set {name!r} lacks its data or done dataset")
            if data.ndim != 2 or data.shape[0] != n_rows or done.shape != (n_videos,):
                raise broken(f"feature set {name!r} has {data.shape} data and {done.shape} "
                             f"done for {n_rows} rows and {n_videos} items")
            try:
                json.loads(group.attrs.get("config", "{}"))
            except (TypeError, ValueError) as exc:
                raise broken(f"feature set {name!r}: its config does not parse ({exc})"
                             ) from None
        if "crops" in h5 and (not isinstance(h5["crops"], h5py.Dataset)
                              or h5["crops"].shape[:1] != (n_rows,)):
            raise broken(f"/crops does not hold one crop per row ({n_rows})")
        labels = h5["videos/label"][:]
        if len(labels) and not np.isin(labels, list(LABEL_NAMES)).all():
            raise broken("/videos/label holds codes other than -1, 0, 1")
        starts, counts = h5["videos/row_start"][:], h5["videos/row_count"][:]
        if len(starts) and ((starts < 0).any() or (counts < 0).any()
                            or (starts + counts > n_rows).any()):
            raise broken("an item's rows lie outside /frames")
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise broken(f"{exc.__class__.__name__}: {exc}") from None


def check_config(stored: ExtractorConfig, wanted: ExtractorConfig, path: Path) -> None:
    """Raise :class:`ConfigMismatch` if ``wanted`` would write rows that mean something else."""
    diff = stored.row_differences(wanted)
    if diff:
        detail = ", ".join(f"{k}: cache {a!r} vs asked {b!r}" for k, (a, b) in diff.items())
        raise ConfigMismatch(f"{path} was extracted with other settings ({detail}); "
                             "use the cache's settings or another --out file")


def feature_config_differences(stored: dict, current: dict) -> list[str]:
    """What two configs of one feature set disagree on (weights checksum, crop, dim, ...), as
    ``key: stored vs current`` lines. Keys only one of them has are not compared."""
    return [f"{key}: {stored[key]!r} vs {current[key]!r}"
            for key in sorted(set(stored) & set(current)) if stored[key] != current[key]]


