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

One writer at a time: ``extract`` and ``derive`` hold a lock on ``<cache>.lock`` (an ``flock``,
released by the kernel when the process ends, however it ends) for their whole run, and a commit
takes it too. A second writer is refused at once with one line naming the holder (pid, host,
start time, command). Staged items carry the settings they were made with (the row-deciding
extractor fields and the self-blend settings); a commit discards, with one line, those made with
other settings than the run's. While holding the lock a run clears what killed runs left: the
temporary files of staged items, the hidden copy of the cache a commit was writing, and (set
aside in ``<cache>.staging/rejected/``) staged files that do not read.

Readers validate the structure when they open a cache (every dataset present, lengths that
agree, attributes that parse) and turn any read error into :class:`CacheCorrupt`: one line,
never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import threading
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from fakeprobe import __version__
from fakeprobe.core.config import ROW_FIELDS, ExtractorConfig
from fakeprobe.core.schema import LABEL_CODES, LABEL_NAMES, READ_STATUSES
from fakeprobe.errors import (CacheCorrupt, CacheError, CacheLocked, ConfigMismatch, OutputError,
                              SchemaMismatch)
from fakeprobe.fileio import HDF5_SIGNATURE, WRITE_ERRNOS, atomic_path

SCHEMA_VERSION = 1
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


# --- the writer lock -------------------------------------------------------------------------

def lock_path(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".lock")


def run_settings(config: ExtractorConfig, attrs: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """What decides the content of a staged item: the row-deciding extractor fields and the
    self-blend settings (``None`` when the run makes no pseudo-fakes)."""
    fields = config.to_dict()
    return {"rows": {name: fields[name] for name in ROW_FIELDS},
            "self_blend": (attrs or {}).get("self_blend")}


@dataclass
class _Session:
    fd: int
    settings: dict[str, Any] | None
    log: Callable[[str], None]
    depth: int = 1


_SESSIONS: dict[str, _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _key(cache_path: Path) -> str:
    return os.path.realpath(cache_path)


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _holder_line(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 8192, 0).decode("utf-8"))
        return (f"pid {info['pid']} on {info['host']}, since {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def _acquire(path: Path, cache_path: Path) -> int:
    import fcntl

    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CacheError(f"{cache_path}: cannot create its lock file {path.name} "
                             f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_line(fd)
            os.close(fd)
            raise CacheLocked(f"{cache_path} is being written by another fakeprobe ({holder}); "
                              "wait for it to finish, or write to another --out file"
                              ) from None
        try:  # the lock file may have been removed by its last holder meanwhile: start again
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def writer(cache_path: Path | str, config: ExtractorConfig | None = None,
           attrs: dict[str, str] | None = None,
           log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cache's writer lock for the block: refused at once (:class:`CacheLocked`)
    while another process holds it; re-entrant within one process.

    ``config`` and ``attrs`` (the run's extractor config and self-blend setting) are stamped on
    every item staged meanwhile (see :func:`run_settings`); ``log`` receives the one-line notes
    of the commits (items discarded or set aside). On acquiring, what killed runs left is
    cleared (see the module docstring). The lock is an ``flock``: a killed holder's lock is
    released by the kernel, so a stale lock file never blocks.
    """
    cache_path = Path(cache_path)
    key = _key(cache_path)
    settings = run_settings(config, attrs) if config is not None else None
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            session.depth += 1
            if settings is not None and session.settings is None:
                session.settings = settings
    if session is not None:
        try:
            yield
        finally:
            session.depth -= 1
        return
    path = lock_path(cache_path)
    fd = _acquire(path, cache_path)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": shlex.join(sys.argv)[:500]}
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        session = _Session(fd, settings, log or _log_stderr)
        with _SESSIONS_LOCK:
            _SESSIONS[key] = session
        _clear_leftovers(cache_path, session.log)
        yield
    finally:
        with _SESSIONS_LOCK:
            _SESSIONS.pop(key, None)
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a waiter on this file sees it gone and retries
        os.close(fd)


def holds_lock(cache_path: Path | str) -> bool:
    """True while this process holds the cache's writer lock."""
    return _key(Path(cache_path)) in _SESSIONS


def _session(cache_path: Path) -> _Session | None:
    return _SESSIONS.get(_key(cache_path))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, another user's
    return True


def _leftover_pid(name: str, pattern: re.Pattern) -> int | None:
    match = pattern.fullmatch(name)
    return int(match.group(1)) if match else None


def _clear_leftovers(cache_path: Path, log: Callable[[str], None]) -> None:
    """Remove what killed writers left (called with the lock held, so no live writer of this
    cache is at work; a file of a process still alive is left alone all the same)."""
    copy = re.compile(re.escape(f".{cache_path.stem}.") + r"(\d+)"
                      + re.escape(f".tmp{cache_path.suffix}"))
    folder = cache_path.parent
    if folder.is_dir():
        for entry in folder.iterdir():
            pid = _leftover_pid(entry.name, copy)
            if pid is not None and not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    log(f"{cache_path}: removed {entry.name}, the unfinished copy of a commit "
                        "that was killed (the cache itself is whole)")
    staging = staging_dir(cache_path)
    if staging.is_dir():
        partial = re.compile(r"\..+\.(\d+)\.tmp")
        unnamed = re.compile(r"\.[^.]+\.tmp")  # written by a version that did not name its pid
        for entry in staging.iterdir():
            pid = _leftover_pid(entry.name, partial)
            if (pid is not None and not _pid_alive(pid)) or unnamed.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    entry.unlink()


# --- staging ---------------------------------------------------------------------------------

def staging_dir(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".staging")


def stage(cache_path: Path, item: StagedItem) -> Path:
    """Write one item atomically to the staging folder; return its path.

    The item carries the settings of the writer session that stages it (see :func:`writer`),
    so a later commit can tell whether it was made like the cache's other items."""
    cache_path = Path(cache_path)
    folder = staging_dir(cache_path)
    folder.mkdir(parents=True, exist_ok=True)
    session = _session(cache_path)
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({"kind": item.kind, "record": asdict(item.record),
                                     "features": sorted(item.features),
                                     "settings": session.settings if session else None})),
    }
    if item.rows is not None:
        arrays.update({f"rows__{k}": v for k, v in item.rows.columns().items()})
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
                                    if name != "video"})
            features = {str(name): np.asarray(data[f"feat__{name}"], dtype=np.float32)
                        for name in meta["features"]}
            crops = data["crops"] if "crops" in data.files else None
        record = VideoRecord(**meta["record"])
        kind = meta["kind"]
        if kind not in ("video", "features") or record.label not in LABEL_CODES:
            raise ValueError(f"kind {kind!r}, label {record.label!r}")
        if rows is not None:
            shapes = {name: getattr(rows, name).shape for name in _FRAME_COLUMNS
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
    try:
        version = h5.attrs.get("schema_version")
        version = None if version is None else int(version)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CacheCorrupt(f"{path}: broken cache: its schema_version does not read ({exc})"
                           ) from None
    if version is None:
        raise SchemaMismatch(f"{path}: not a fakeprobe cache (no schema_version attribute)")
    if version != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{path}: cache schema version {int(version)}, this fakeprobe reads version "
            f"{SCHEMA_VERSION}; extract again into a new cache with this version"
        )


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
        for group, columns in (("videos", {k: (v, ()) for k, v in _VIDEO_COLUMNS.items()}),
                               ("frames", _FRAME_COLUMNS)):
            for name, (dtype, shape) in columns.items():
                dataset = h5[group].get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise broken(f"/{group}/{name} is missing")
                if dataset.shape[1:] != shape or not _kind_ok(dataset, dtype):
                    raise broken(f"/{group}/{name} holds {dataset.dtype} of shape "
                                 f"{dataset.shape}")
                lengths.setdefault(group, {})[name] = dataset.shape[0] if dataset.shape else -1
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
        if existing is not None and not retried(self.status[existing]):
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
    once it is done.

    Takes the writer lock (see :func:`writer`; already held by ``extract`` and ``derive``):
    :class:`CacheLocked` while another process writes the cache, the staged items staying
    staged. Staged items made with other settings than ``config`` and ``attrs`` are discarded,
    and staged files that do not read are set aside, each case with one line."""
    cache_path = Path(cache_path)
    try:
        lock = writer(cache_path)
        lock.__enter__()
    except CacheLocked as exc:
        raise CacheLocked(f"{exc}; the {len(staged_files(cache_path))} staged item(s) in "
                          f"{staging_dir(cache_path)} are kept for the next run") from None
    try:
        with _interrupts_deferred():
            return _commit(cache_path, config, feature_configs, attrs or {},
                           _session(cache_path).log)
    except OutputError as exc:
        raise OutputError(f"{exc}; the staged items are kept in {staging_dir(cache_path)}"
                          ) from None
    except OSError as exc:  # HDF5 reports a failed write (a full disk) without an errno
        raise CacheError(f"{cache_path}: the commit failed ({exc}); the cache is left as it "
                         f"was and the staged items are kept in {staging_dir(cache_path)}"
                         ) from None
    finally:
        lock.__exit__(None, None, None)


#: Room a commit keeps free beyond the cache and twice the staged items: a new cache's
#: datasets take about 2 MB however few items it holds (chunks of 4096 rows).
COMMIT_MARGIN_BYTES = 8 << 20


def _check_free_space(cache_path: Path, files: list[Path]) -> None:
    """Refuse a commit that would fill the disk: HDF5 does not recover from a failed write
    (the process can crash at exit), so the room is checked first."""
    try:
        free = shutil.disk_usage(cache_path.parent).free
        size = cache_path.stat().st_size if cache_path.exists() else 0
        staged = sum(f.stat().st_size for f in files)
    except OSError:
        return
    needed = size + 2 * staged + COMMIT_MARGIN_BYTES
    if free < needed:
        raise OutputError(f"{cache_path}: not enough free space to commit "
                          f"({needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free); "
                          f"the cache is left as it was")


def _settings_differences(made: dict[str, Any], wanted: dict[str, Any],
                          record: VideoRecord) -> list[str]:
    rows_made, rows_wanted = made.get("rows", {}), wanted["rows"]
    out = [f"{name} {rows_made.get(name)!r}, not {rows_wanted[name]!r}"
           for name in ROW_FIELDS if rows_made.get(name) != rows_wanted[name]]
    if record.method == "self_blend" and made.get("self_blend") != wanted["self_blend"]:
        out.append("other self-blend settings")
    return out


def _commit(cache_path: Path, config: ExtractorConfig,
            feature_configs: dict[str, dict] | None, attrs: dict[str, str],
            log: Callable[[str], None]) -> int:
    files = staged_files(cache_path)
    if not files:
        return 0
    _check_free_space(cache_path, files)
    with atomic_path(cache_path) as tmp:
        if cache_path.exists():
            shutil.copyfile(cache_path, tmp)
            mode = "r+"
        else:
            mode = "w-"
        try:
            h5 = h5py.File(tmp, mode)
        except OSError as exc:
            raise CacheCorrupt(f"{cache_path}: cannot open as HDF5 ({exc}); the staged items "
                               f"are kept in {staging_dir(cache_path)}") from None
        with h5:
            if mode == "w-":
                _create_layout(h5, config)
            else:
                _check_schema(h5, cache_path)
                _validate(h5, cache_path)
                stored = ExtractorConfig.from_dict(json.loads(h5.attrs["extractor_config"]))
                check_config(stored, config, cache_path)
                merged_backbones = tuple(dict.fromkeys(stored.backbones + config.backbones))
                h5.attrs["extractor_config"] = json.dumps(
                    ExtractorConfig.from_dict({**config.to_dict(),
                                               "backbones": merged_backbones}).to_dict())
            blend = attrs.get("self_blend", h5.attrs.get("self_blend"))
            wanted = run_settings(config, {"self_blend": blend} if blend is not None else {})
            merger = _Merger(h5, feature_configs or {})
            merged, done, discarded = 0, [], {}
            for path in files:
                try:
                    item, made = _load_staged(path)
                except CacheCorrupt as exc:
                    _set_aside(path, str(exc), log)
                    continue
                if (made is not None and item.record.method == "self_blend" and blend is None
                        and made.get("self_blend")
                        and not _settings_differences(made, wanted, VideoRecord("", "", "", None,
                                                                                ""))):
                    blend = wanted["self_blend"] = made["self_blend"]  # the first pseudo-fakes
                    h5.attrs["self_blend"] = blend
                differences = (_settings_differences(made, wanted, item.record)
                               if made is not None else [])
                if differences:
                    discarded[item.record.id] = differences
                else:
                    merged += merger.merge(item)
                done.append(path)
            for key, value in attrs.items():
                h5.attrs[key] = value
            h5.attrs["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(
                timespec="seconds")
    if discarded:
        first = next(iter(discarded.values()))
        log(f"{cache_path}: discarded {len(discarded)} staged item(s) made with other settings "
            f"than this run's ({'; '.join(first)}{'; ...' if len(discarded) > 1 else ''}): "
            f"{', '.join(list(discarded)[:5])}{', ...' if len(discarded) > 5 else ''}; "
            "they are extracted again")
    for f in done:
        f.unlink(missing_ok=True)
    try:
        staging_dir(cache_path).rmdir()
    except OSError:
        pass
    return merged


# --- reading ---------------------------------------------------------------------------------

def _reads(method):
    """Turn a read error of a damaged file (HDF5's OSError, a missing object's KeyError, bytes
    that do not decode) into :class:`CacheCorrupt`: one line instead of a traceback."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except CacheError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise CacheCorrupt(f"{self.path}: broken cache: reading it failed "
                               f"({exc.__class__.__name__}: {exc}); extract again into a new "
                               "cache (or restore a copy)") from None

    return wrapper


class CacheReader:
    """Read-only access to a cache; use as a context manager.

    Columns come back as numpy arrays (strings decoded). Nothing is read until asked for. The
    structure is validated on opening; a damaged file raises :class:`CacheCorrupt`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache")
        if self.path.is_dir():
            raise CacheError(f"{self.path}: a folder, not a cache")
        try:
            with open(self.path, "rb") as handle:
                signature = handle.read(len(HDF5_SIGNATURE))
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot read it ({exc.strerror or exc})") from None
        if signature != HDF5_SIGNATURE:
            raise CacheCorrupt(f"{self.path}: cannot open as HDF5: not an HDF5 file, so not a "
                               "fakeprobe cache")
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise CacheCorrupt(f"{self.path}: cannot open as HDF5 ({exc}); the file is "
                               "damaged or truncated") from None
        try:
            _check_schema(self._h5, self.path)
            _validate(self._h5, self.path)
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
    @_reads
    def attrs(self) -> dict[str, Any]:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._h5.attrs.items()}

    @property
    @_reads
    def config(self) -> ExtractorConfig:
        return ExtractorConfig.from_dict(json.loads(self._h5.attrs["extractor_config"]))

    @property
    @_reads
    def n_videos(self) -> int:
        return int(self._h5["videos/id"].shape[0])

    @property
    @_reads
    def n_rows(self) -> int:
        return int(self._h5["frames/video"].shape[0])

    @property
    @_reads
    def feature_sets(self) -> dict[str, dict]:
        """name -> stored backbone config (with ``dim``)."""
        out = {}
        for name, group in self._h5["features"].items():
            cfg = json.loads(group.attrs.get("config", "{}"))
            cfg["dim"] = int(group["data"].shape[1])
            out[name] = cfg
        return out

    @property
    @_reads
    def has_crops(self) -> bool:
        return "crops" in self._h5

    @_reads
    def videos(self) -> dict[str, np.ndarray]:
        """Every ``/videos`` column, strings decoded; ``label`` as ``real``/``fake``/''."""
        out = {}
        for name, dataset in self._h5["videos"].items():
            out[name] = dataset.asstr()[:] if dataset.dtype.kind == "O" else dataset[:]
        out["label"] = np.array([LABEL_NAMES[int(v)] for v in out["label"]], dtype=object)
        return out

    @_reads
    def frames(self, columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        names = columns or tuple(self._h5["frames"].keys())
        return {name: self._h5[f"frames/{name}"][:] for name in names}

    @_reads
    def features(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        if name not in self._h5["features"]:
            raise CacheError(f"{self.path}: no feature set {name!r}; it holds "
                             f"{', '.join(self._h5['features']) or 'none'}")
        data = self._h5[f"features/{name}/data"]
        return data[:] if rows is None else data[rows]

    @_reads
    def feature_done(self, name: str) -> np.ndarray:
        return self._h5[f"features/{name}/done"][:]

    @_reads
    def crops(self, rows: slice | np.ndarray) -> np.ndarray:
        if "crops" not in self._h5:
            raise CacheError(f"{self.path}: no face crops stored (extract with --keep-crops)")
        return self._h5["crops"][rows]

    @_reads
    def state(self) -> dict[str, tuple[str, set[str]]]:
        """id -> (status, feature sets done): what a new run can skip."""
        ids = self._h5["videos/id"].asstr()[:]
        status = self._h5["videos/status"].asstr()[:]
        done = {name: g["done"][:] for name, g in self._h5["features"].items()}
        return {vid: (status[i], {n for n, d in done.items() if d[i]})
                for i, vid in enumerate(ids)}

    def iter_video_rows(self) -> Iterator[tuple[int, slice]]:
        yield from self._video_rows()

    @_reads
    def _video_rows(self) -> list[tuple[int, slice]]:
        starts = self._h5["videos/row_start"][:]
        counts = self._h5["videos/row_count"][:]
        return [(i, slice(int(start), int(start + count)))
                for i, (start, count) in enumerate(zip(starts, counts))]


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
