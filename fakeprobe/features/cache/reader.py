"""Reading a cache: :class:`CacheReader` and :func:`summarize`.

A reader opens the file read-only and validates its structure (every dataset present, lengths
that agree, attributes that parse); any read error becomes :class:`CacheCorrupt`, one line. While
open it holds a shared lock on the file, so a commit never overwrites what it reads (see
:mod:`~fakeprobe.features.cache.journal`); a reader opened while a commit appends sees the cache
as it was. After a commit that was killed and not rolled back yet, a reader reads the cache as
it was before that commit, through its journal, and writes nothing.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.schema import LABEL_NAMES, READ_STATUSES
from fakeprobe.errors import CacheCorrupt, CacheError
from fakeprobe.features.cache.journal import (RolledBack, journal_path, read_journal,
                                              shared_lock)
from fakeprobe.features.cache.schema import AUGMENT_COLUMN, _check_schema, _validate
from fakeprobe.features.cache.staging import staged_files
from fakeprobe.fileio import HDF5_SIGNATURE

#: (real path of a cache, thread id) -> readers open: a commit refuses to wait for a reader
#: its own thread holds (it would wait for ever).
_OPEN: Counter[tuple[str, int]] = Counter()
_OPEN_LOCK = threading.Lock()


def open_in_thread(cache_path: Path) -> bool:
    """Whether the calling thread holds a :class:`CacheReader` of ``cache_path`` open."""
    with _OPEN_LOCK:
        return _OPEN[(os.path.realpath(cache_path), threading.get_ident())] > 0


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
            self._lock = shared_lock(self.path)
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot read it ({exc.strerror or exc})") from None
        self._key = (os.path.realpath(self.path), threading.get_ident())
        try:
            self._h5 = self._open()
            try:
                _check_schema(self._h5, self.path)
                _validate(self._h5, self.path)
            except CacheError:
                self._h5.close()
                raise
        except BaseException:
            os.close(self._lock)
            raise
        with _OPEN_LOCK:
            _OPEN[self._key] += 1

    def _open(self) -> h5py.File:
        journal = read_journal(journal_path(self.path))
        try:
            if journal is not None and journal.sealed:  # a commit killed while overwriting
                self._view = RolledBack(self.path, journal)
                return h5py.File(self._view, "r")
            return h5py.File(self.path, "r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise CacheCorrupt(f"{self.path}: cannot open as HDF5 ({exc}); the file is "
                               "damaged or truncated") from None

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is None:
            return
        self._h5.close()
        if getattr(self, "_view", None) is not None:
            self._view.close()
        os.close(self._lock)
        self._lock = None
        with _OPEN_LOCK:
            _OPEN[self._key] -= 1
            if not _OPEN[self._key]:
                del _OPEN[self._key]

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

    @property
    @_reads
    def n_commits(self) -> int | None:
        """Commits logged in ``/commits`` (``None`` for a version 1 cache, which has none)."""
        return int(self._h5["commits/items"].shape[0]) if "commits" in self._h5 else None

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
        names = columns or tuple(dict.fromkeys((*self._h5["frames"].keys(), AUGMENT_COLUMN)))
        out = {}
        for name in names:
            if name == AUGMENT_COLUMN and name not in self._h5["frames"]:
                # a cache older than version 3 holds only original rows
                out[name] = np.full(self._h5["frames/video"].shape[0], "", dtype=object)
            elif name == AUGMENT_COLUMN:
                out[name] = self._h5[f"frames/{name}"].asstr()[:].astype(object)
            else:
                out[name] = self._h5[f"frames/{name}"][:]
        return out

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
        if cache.n_commits is not None:
            summary["commits"] = cache.n_commits
    staged = len(staged_files(Path(path)))
    if staged:
        summary["staged_not_committed"] = staged
    journal = journal_path(Path(path))
    if journal.exists():
        summary["interrupted_commit"] = (f"{journal.name}: a commit was interrupted; read as "
                                         "before it, rolled back by the next extract or derive")
    return summary


def _count(values: np.ndarray, empty: str = "") -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {(str(n) or empty): int(c) for n, c in zip(names, counts)}

