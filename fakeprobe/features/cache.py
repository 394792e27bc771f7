"""The HDF5 feature cache: the one module that reads and writes it.

Layout (schema version 1)::

    /                 attrs: schema_version, fakeprobe_version, created, extractor_config (JSON)
    /videos/<column>  one entry per media item: id, path, kind, label (1 fake, 0 real, -1 none),
                      group, dataset, method, fps, width, height, n_frames, status, error,
                      row_start, row_count
    /frames/<column>  one row per sampled frame and face: video (index into /videos), frame_index,
                      timestamp, box (x, y, w, h), landmarks (5 x 2), score, track, has_face
    /features/<name>/data   (rows, dim) float32, NaN on rows without a face
    /features/<name>/done   (videos,) bool: the feature set was computed for that video
                      attrs: config (JSON: backbone settings and weights checksum)
    /crops            (rows, S, S, 3) uint8 RGB aligned faces, gzip, only with --keep-crops

A frame with no face is a row with ``has_face=False`` and NaN box, landmarks and features; a
media item that could not be read has a status other than ``ok``/``no_face`` and no rows.

Crash safety: extraction never writes the HDF5 file in place. Each finished item is first
*staged* as a small ``.npz`` file in ``<cache>.staging/`` (written to a temporary name, then
renamed, so a staged file is whole or absent). A *commit* copies the cache, appends the staged
items to the copy, and atomically renames the copy over the cache; staged files are removed
only after that. A crash, ``kill -9`` or Ctrl-C at any moment therefore leaves the previous
cache intact plus whole staged items, which the next run commits: nothing is lost and, since
items are keyed by id, nothing is duplicated.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from fakeprobe import __version__
from fakeprobe.errors import CacheError, ConfigMismatch, SchemaMismatch
from fakeprobe.extractor.config import ExtractorConfig
from fakeprobe.fileio import atomic_path

SCHEMA_VERSION = 1
LABEL_CODES = {"real": 0, "fake": 1, None: -1}
LABEL_NAMES = {0: "real", 1: "fake", -1: ""}
#: Statuses of items that were read; every other status is a failure with no rows.
READ_STATUSES = ("ok", "no_face")
#: Failures worth trying again on the next run (the file may have appeared).
RETRY_STATUSES = ("missing",)

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
    "track": (np.int32, ()), "has_face": (np.bool_, ()),
}


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

    def __len__(self) -> int:
        return len(self.frame_index)

    @classmethod
    def empty(cls) -> "FrameRows":
        return cls(**{name: np.zeros((0, *shape), dtype=dtype)
                      for name, (dtype, shape) in _FRAME_COLUMNS.items() if name != "video"})

    def columns(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name), dtype=_FRAME_COLUMNS[name][0])
                for name in _FRAME_COLUMNS if name != "video"}


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


# --- staging ---------------------------------------------------------------------------------

def staging_dir(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".staging")


def stage(cache_path: Path, item: StagedItem) -> Path:
    """Write one item atomically to the staging folder; return its path."""
    folder = staging_dir(cache_path)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({"kind": item.kind, "record": asdict(item.record),
                                     "features": sorted(item.features)})),
    }
    if item.rows is not None:
        arrays.update({f"rows__{k}": v for k, v in item.rows.columns().items()})
    for name, values in item.features.items():
        arrays[f"feat__{name}"] = np.asarray(values, dtype=np.float32)
    if item.crops is not None:
        arrays["crops"] = np.asarray(item.crops, dtype=np.uint8)
    name = f"{_dt.datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".{name}.tmp"
    final = folder / f"{name}.npz"
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


def load_staged(path: Path) -> StagedItem:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        rows = None
        if "rows__frame_index" in data.files:
            rows = FrameRows(**{k[len("rows__"):]: data[k] for k in data.files
                                if k.startswith("rows__")})
        features = {name: data[f"feat__{name}"] for name in meta["features"]}
        crops = data["crops"] if "crops" in data.files else None
    return StagedItem(VideoRecord(**meta["record"]), meta["kind"], rows, features, crops)


def staged_files(cache_path: Path) -> list[Path]:
    """Whole staged items, oldest first. Leftover temporary files of a killed run are removed."""
    folder = staging_dir(cache_path)
    if not folder.is_dir():
        return []
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    return sorted(folder.glob("*.npz"))


# --- commit ----------------------------------------------------------------------------------

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
                              chunks=(4096, *shape))
    h5.create_group("features")
    if config.keep_crops:
        size = config.keep_crops
        h5.create_dataset("crops", shape=(0, size, size, 3), maxshape=(None, size, size, 3),
                          dtype=np.uint8, chunks=(1, size, size, 3), compression="gzip",
                          compression_opts=4)


def _check_schema(h5: h5py.File, path: Path) -> None:
    version = h5.attrs.get("schema_version")
    if version is None:
        raise SchemaMismatch(f"{path}: not a fakeprobe cache (no schema_version attribute)")
    if int(version) != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{path}: cache schema version {int(version)}, this fakeprobe reads version "
            f"{SCHEMA_VERSION}; extract again into a new cache with this version"
        )


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


def _append(dataset: h5py.Dataset, values: np.ndarray) -> int:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    if len(values):
        dataset[start:] = values
    return start


def _ensure_feature(h5: h5py.File, name: str, dim: int, config: dict | None) -> h5py.Group:
    features = h5["features"]
    if name in features:
        group = features[name]
        if group["data"].shape[1] != dim:
            raise CacheError(f"feature set {name!r}: cache holds {group['data'].shape[1]}-d "
                             f"vectors, the new item has {dim}-d")
        return group
    group = features.create_group(name)
    n_rows, n_videos = h5["frames/video"].shape[0], h5["videos/id"].shape[0]
    group.create_dataset("data", shape=(n_rows, dim), maxshape=(None, dim), dtype=np.float32,
                         chunks=(max(1, min(4096, 2**20 // (4 * dim))), dim),
                         fillvalue=np.nan)
    group.create_dataset("done", shape=(n_videos,), maxshape=(None,), dtype=np.bool_,
                         chunks=(1024,), fillvalue=False)
    group.attrs["config"] = json.dumps(config or {"name": name, "dim": dim})
    return group


class _Merger:
    """Appends staged items to an open (temporary) cache file."""

    def __init__(self, h5: h5py.File, feature_configs: dict[str, dict]) -> None:
        self.h5 = h5
        self.feature_configs = feature_configs
        ids = h5["videos/id"].asstr()[:]
        self.index = {vid: i for i, vid in enumerate(ids)}
        self.status = list(h5["videos/status"].asstr()[:])

    def merge(self, item: StagedItem) -> bool:
        if item.kind == "features":
            return self._merge_features(item)
        return self._merge_video(item)

    def _merge_video(self, item: StagedItem) -> bool:
        h5, record = self.h5, item.record
        existing = self.index.get(record.id)
        if existing is not None and self.status[existing] not in RETRY_STATUSES:
            return False  # already cached: a repeat of committed work
        rows = item.rows if item.rows is not None else FrameRows.empty()
        columns = asdict(record)
        columns["label"] = LABEL_CODES[record.label]
        if existing is None:
            position = h5["videos/id"].shape[0]
            for name in _VIDEO_COLUMNS:
                if name not in ("row_start", "row_count"):
                    _append(h5[f"videos/{name}"], np.array([columns[name]],
                                                           dtype=h5[f"videos/{name}"].dtype))
            _append(h5["videos/row_start"], np.array([0]))
            _append(h5["videos/row_count"], np.array([0]))
            for group in h5["features"].values():
                _append(group["done"], np.array([False]))
            self.index[record.id] = position
            self.status.append(record.status)
        else:
            position = existing
            for name in _VIDEO_COLUMNS:
                if name not in ("row_start", "row_count"):
                    h5[f"videos/{name}"][position] = columns[name]
            self.status[position] = record.status
        start = h5["frames/video"].shape[0]
        _append(h5["frames/video"], np.full(len(rows), position, dtype=np.int32))
        for name, values in rows.columns().items():
            _append(h5[f"frames/{name}"], values)
        h5["videos/row_start"][position] = start
        h5["videos/row_count"][position] = len(rows)
        for name, values in item.features.items():
            _ensure_feature(h5, name, values.shape[1], self.feature_configs.get(name))
        for name, group in h5["features"].items():
            data = group["data"]
            data.resize(start + len(rows), axis=0)  # new rows read as NaN (fill value)
            if name in item.features and len(rows):
                data[start:] = item.features[name]
            group["done"][position] = name in item.features
        if "crops" in h5:
            crops = h5["crops"]
            crops.resize(start + len(rows), axis=0)
            if item.crops is not None and len(rows):
                crops[start:] = item.crops
        return True

    def _merge_features(self, item: StagedItem) -> bool:
        h5 = self.h5
        position = self.index.get(item.record.id)
        if position is None:
            raise CacheError(f"staged features for {item.record.id!r}, which is not cached")
        start = int(h5["videos/row_start"][position])
        count = int(h5["videos/row_count"][position])
        merged = False
        for name, values in item.features.items():
            group = _ensure_feature(h5, name, values.shape[1], self.feature_configs.get(name))
            if group["done"][position]:
                continue
            if len(values) != count:
                raise CacheError(f"{item.record.id}: {len(values)} feature rows for {count} "
                                 "cached rows")
            if count:
                group["data"][start : start + count] = values
            group["done"][position] = True
            merged = True
        return merged


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (main thread only), then raise it.

    A commit takes seconds; finishing it is what the user wants when they press Ctrl-C. A kill
    cannot be deferred, and needs not be: the cache is replaced atomically.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def commit(cache_path: Path, config: ExtractorConfig,
           feature_configs: dict[str, dict] | None = None,
           attrs: dict[str, str] | None = None) -> int:
    """Merge every staged item into the cache (copy, append, atomic rename); return how many
    were new. ``feature_configs`` gives the provenance stored with new feature sets; ``attrs``
    are set on the file (e.g. the self-blend settings). Ctrl-C during a commit takes effect
    once it is done."""
    with _interrupts_deferred():
        return _commit(Path(cache_path), config, feature_configs, attrs or {})


def _commit(cache_path: Path, config: ExtractorConfig,
            feature_configs: dict[str, dict] | None, attrs: dict[str, str]) -> int:
    files = staged_files(cache_path)
    if not files:
        return 0
    with atomic_path(cache_path) as tmp:
        if cache_path.exists():
            shutil.copyfile(cache_path, tmp)
            mode = "r+"
        else:
            mode = "w-"
        with h5py.File(tmp, mode) as h5:
            if mode == "w-":
                _create_layout(h5, config)
            else:
                _check_schema(h5, cache_path)
                stored = ExtractorConfig.from_dict(json.loads(h5.attrs["extractor_config"]))
                check_config(stored, config, cache_path)
                merged_backbones = tuple(dict.fromkeys(stored.backbones + config.backbones))
                h5.attrs["extractor_config"] = json.dumps(
                    ExtractorConfig.from_dict({**config.to_dict(),
                                               "backbones": merged_backbones}).to_dict())
            merger = _Merger(h5, feature_configs or {})
            merged = sum(merger.merge(load_staged(f)) for f in files)
            for key, value in attrs.items():
                h5.attrs[key] = value
            h5.attrs["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(
                timespec="seconds")
    for f in files:
        f.unlink(missing_ok=True)
    try:
        staging_dir(cache_path).rmdir()
    except OSError:
        pass
    return merged


# --- reading ---------------------------------------------------------------------------------

class CacheReader:
    """Read-only access to a cache; use as a context manager.

    Columns come back as numpy arrays (strings decoded). Nothing is read until asked for.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        try:
            _check_schema(self._h5, self.path)
        except CacheError:
            self._h5.close()
            raise

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._h5.attrs.items()}

    @property
    def config(self) -> ExtractorConfig:
        return ExtractorConfig.from_dict(json.loads(self._h5.attrs["extractor_config"]))

    @property
    def n_videos(self) -> int:
        return int(self._h5["videos/id"].shape[0])

    @property
    def n_rows(self) -> int:
        return int(self._h5["frames/video"].shape[0])

    @property
    def feature_sets(self) -> dict[str, dict]:
        """name -> stored backbone config (with ``dim``)."""
        out = {}
        for name, group in self._h5["features"].items():
            cfg = json.loads(group.attrs.get("config", "{}"))
            cfg["dim"] = int(group["data"].shape[1])
            out[name] = cfg
        return out

    @property
    def has_crops(self) -> bool:
        return "crops" in self._h5

    def videos(self) -> dict[str, np.ndarray]:
        """Every ``/videos`` column, strings decoded; ``label`` as ``real``/``fake``/''."""
        out = {}
        for name, dataset in self._h5["videos"].items():
            out[name] = dataset.asstr()[:] if dataset.dtype.kind == "O" else dataset[:]
        out["label"] = np.array([LABEL_NAMES[int(v)] for v in out["label"]], dtype=object)
        return out

    def frames(self, columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        names = columns or tuple(self._h5["frames"].keys())
        return {name: self._h5[f"frames/{name}"][:] for name in names}

    def features(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        if name not in self._h5["features"]:
            raise CacheError(f"{self.path}: no feature set {name!r}; it holds "
                             f"{', '.join(self._h5['features']) or 'none'}")
        data = self._h5[f"features/{name}/data"]
        return data[:] if rows is None else data[rows]

    def feature_done(self, name: str) -> np.ndarray:
        return self._h5[f"features/{name}/done"][:]

    def crops(self, rows: slice | np.ndarray) -> np.ndarray:
        if "crops" not in self._h5:
            raise CacheError(f"{self.path}: no face crops stored (extract with --keep-crops)")
        return self._h5["crops"][rows]

    def state(self) -> dict[str, tuple[str, set[str]]]:
        """id -> (status, feature sets done): what a new run can skip."""
        ids = self._h5["videos/id"].asstr()[:]
        status = self._h5["videos/status"].asstr()[:]
        done = {name: g["done"][:] for name, g in self._h5["features"].items()}
        return {vid: (status[i], {n for n, d in done.items() if d[i]})
                for i, vid in enumerate(ids)}

    def iter_video_rows(self) -> Iterator[tuple[int, slice]]:
        starts = self._h5["videos/row_start"][:]
        counts = self._h5["videos/row_count"][:]
        for i, (start, count) in enumerate(zip(starts, counts)):
            yield i, slice(int(start), int(start + count))


def summarize(path: Path | str) -> dict[str, Any]:
    """Counts per label, dataset, method and status, feature sets and config: ``fakeprobe info``."""
    with CacheReader(path) as cache:
        videos = cache.videos()
        frames = cache.frames(("has_face",))
        feature_sets = cache.feature_sets
        done = {name: int(cache.feature_done(name).sum()) for name in feature_sets}
        attrs = cache.attrs
        summary = {
            "path": str(cache.path),
            "schema_version": int(attrs["schema_version"]),
            "fakeprobe_version": attrs.get("fakeprobe_version", ""),
            "created": attrs.get("created", ""),
            "updated": attrs.get("updated", ""),
            "items": cache.n_videos,
            "rows": cache.n_rows,
            "rows_with_face": int(frames["has_face"].sum()),
            "crops": cache.has_crops,
            "by_label": _count(videos["label"], empty="unlabelled"),
            "by_dataset": _count(videos["dataset"], empty="(none)"),
            "by_method": _count(videos["method"], empty="(none)"),
            "by_status": _count(videos["status"]),
            "by_kind": _count(videos["kind"]),
            "feature_sets": {name: {**cfg, "items_done": done[name]}
                             for name, cfg in feature_sets.items()},
            "extractor_config": cache.config.to_dict(),
            "failures": [
                {"id": vid, "status": st, "error": err}
                for vid, st, err in zip(videos["id"], videos["status"], videos["error"])
                if st not in READ_STATUSES
            ],
        }
    staged = len(staged_files(Path(path)))
    if staged:
        summary["staged_not_committed"] = staged
    return summary


def _count(values: np.ndarray, empty: str = "") -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {(str(n) or empty): int(c) for n, c in zip(names, counts)}
