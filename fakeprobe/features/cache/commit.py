"""Commits: staged items merged into the cache, at a cost proportional to what they add.

The first commit of a new cache writes it whole under a temporary name and renames it (there is
nothing to keep). Every later commit appends in place through a journal (see
:mod:`~fakeprobe.features.cache.journal`): a crash, ``kill -9`` or Ctrl-C at any moment leaves
the cache as it was before the commit or as it is after it, plus whole staged items, which the
next run commits. Staged files are removed only after the commit point; items are keyed by id,
so a staged item committed twice is merged once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py

from fakeprobe.core.config import ROW_FIELDS, ExtractorConfig
from fakeprobe.errors import CacheCorrupt, CacheError, CacheLocked, OutputError
from fakeprobe.features.cache.journal import JournaledFile, recover
from fakeprobe.features.cache.lock import _Session, _session, run_settings, staging_dir, writer
from fakeprobe.features.cache.merge import Merger
from fakeprobe.features.cache.reader import open_in_thread
from fakeprobe.features.cache.schema import (VideoRecord, _check_schema, _create_layout,
                                             _log_commit, _upgrade, _validate, check_config)
from fakeprobe.features.cache.staging import _load_staged, _set_aside, staged_files
from fakeprobe.fileio import WRITE_ERRNOS, atomic_path, interrupts_deferred

#: Room a commit keeps free beyond twice the staged items: a new cache's datasets take about
#: 2 MB however few items it holds, and the journal holds the blocks a commit rewrites.
COMMIT_MARGIN_BYTES = 8 << 20
#: Staged bytes merged per batch (one write per dataset and batch): bounds a commit's memory.
BATCH_BYTES = 64 << 20
#: How long a commit waits for other processes' readers to close the cache before giving up
#: (the staged items are kept).
READER_WAIT_SECONDS = 300.0


def commit(cache_path: Path, config: ExtractorConfig,
           feature_configs: dict[str, dict] | None = None,
           attrs: dict[str, str] | None = None) -> int:
    """Merge every staged item into the cache (in place, under a journal); return how many
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
    kept = f"the staged items are kept in {staging_dir(cache_path)}"
    try:
        with interrupts_deferred():
            return _commit(cache_path, config, feature_configs or {}, attrs or {},
                           _session(cache_path))
    except OutputError as exc:
        raise OutputError(f"{exc}; {kept}") from None
    except OSError as exc:  # HDF5 reports a failed write (a full disk) without an errno
        cause = exc
        while cause.__context__ is not None and getattr(cause, "errno", None) is None:
            cause = cause.__context__
        if getattr(cause, "errno", None) in WRITE_ERRNOS:
            raise OutputError(f"{cache_path}: cannot write it ({cause.strerror or cause}); the "
                              f"cache is left as it was and {kept}") from None
        raise CacheError(f"{cache_path}: the commit failed ({exc}); the cache is left as it "
                         f"was and {kept}") from None
    finally:
        lock.__exit__(None, None, None)


def _check_free_space(cache_path: Path, files: list[Path]) -> None:
    """Refuse a commit that would fill the disk: it is rolled back all the same, but HDF5 does
    not recover from a failed write (the process can crash at exit), so the room is checked
    first."""
    try:
        free = shutil.disk_usage(cache_path.parent).free
        staged = sum(f.stat().st_size for f in files)
    except OSError:
        return
    needed = 2 * staged + COMMIT_MARGIN_BYTES
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


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _wait_for_readers(cache_path: Path, log: Callable[[str], None]) -> Callable[[int], None]:
    """Take the exclusive lock on the cache (see :func:`~.journal.shared_lock`), waiting for
    the readers of other processes and threads; refuse when this very thread has one open."""

    def wait(fd: int) -> None:
        if open_in_thread(cache_path):
            raise CacheError(f"{cache_path}: this thread holds a CacheReader of it open; close "
                             "it before committing")
        deadline = time.monotonic() + READER_WAIT_SECONDS
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                raise CacheError(f"{cache_path}: its readers kept it open for "
                                 f"{READER_WAIT_SECONDS:.0f} s; the commit was rolled back")
            if not said and time.monotonic() > deadline - READER_WAIT_SECONDS + 1:
                log(f"{cache_path}: waiting for the programs reading it to close it")
                said = True
            time.sleep(0.02)

    return wait


class _Batch:
    """The staged items of a commit, loaded a batch at a time, the ones made with other
    settings discarded and the unreadable set aside."""

    def __init__(self, files: list[Path], wanted: dict[str, Any], blend: Any,
                 log: Callable[[str], None]) -> None:
        self.files, self.wanted, self.blend, self.log = files, wanted, blend, log
        self.done: list[Path] = []
        self.discarded: dict[str, list[str]] = {}
        self.blend_found = None

    def __iter__(self):
        batch, size = [], 0
        for path in self.files:
            try:
                item, made = _load_staged(path)
            except CacheCorrupt as exc:
                _set_aside(path, str(exc), self.log)
                continue
            if (made is not None and item.record.method == "self_blend" and self.blend is None
                    and made.get("self_blend")
                    and not _settings_differences(made, self.wanted,
                                                  VideoRecord("", "", "", None, ""))):
                self.blend = self.wanted["self_blend"] = made["self_blend"]  # the first ones
                self.blend_found = self.blend
            differences = (_settings_differences(made, self.wanted, item.record)
                           if made is not None else [])
            if differences:
                self.discarded[item.record.id] = differences
            else:
                batch.append(item)
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
            self.done.append(path)
            if size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def report(self, cache_path: Path) -> None:
        if self.discarded:
            first = next(iter(self.discarded.values()))
            ids = list(self.discarded)
            self.log(f"{cache_path}: discarded {len(ids)} staged item(s) made with other "
                     f"settings than this run's ({'; '.join(first)}"
                     f"{'; ...' if len(ids) > 1 else ''}): {', '.join(ids[:5])}"
                     f"{', ...' if len(ids) > 5 else ''}; they are extracted again")


def _merge_into(h5: h5py.File, cache_path: Path, config: ExtractorConfig,
                feature_configs: dict[str, dict], attrs: dict[str, str], files: list[Path],
                session: _Session, new: bool, trusted: bool) -> tuple[int, Merger, _Batch]:
    if new:
        _create_layout(h5, config)
    else:
        _check_schema(h5, cache_path)
        if not trusted:
            _validate(h5, cache_path)
        stored = ExtractorConfig.from_dict(json.loads(h5.attrs["extractor_config"]))
        check_config(stored, config, cache_path)
        merged_backbones = tuple(dict.fromkeys(stored.backbones + config.backbones))
        h5.attrs["extractor_config"] = json.dumps(
            ExtractorConfig.from_dict({**config.to_dict(), "backbones": merged_backbones}
                                      ).to_dict())
        _upgrade(h5)
    blend = attrs.get("self_blend", h5.attrs.get("self_blend"))
    wanted = run_settings(config, {"self_blend": blend} if blend is not None else {})
    merger = Merger(h5, feature_configs, session.known if trusted else None)
    batches = _Batch(files, wanted, blend, session.log)
    merged = 0
    for batch in batches:
        merged += merger.merge(batch)
    if batches.blend_found is not None:
        h5.attrs["self_blend"] = batches.blend_found
    for key, value in attrs.items():
        h5.attrs[key] = value
    h5.attrs["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _log_commit(h5, merger.items_added, merger.rows_added)
    return merged, merger, batches


def _commit(cache_path: Path, config: ExtractorConfig, feature_configs: dict[str, dict],
            attrs: dict[str, str], session: _Session) -> int:
    files = staged_files(cache_path)
    if not files:
        return 0
    _check_free_space(cache_path, files)
    recover(cache_path, session.log)
    if not cache_path.exists():
        with atomic_path(cache_path) as tmp:
            with h5py.File(tmp, "w-") as h5:
                merged, merger, batches = _merge_into(h5, cache_path, config, feature_configs,
                                                      attrs, files, session, True, False)
    else:
        before = _stamp(cache_path)
        trusted = session.known is not None and session.known.stamp == before
        session.known = None
        journaled = JournaledFile(cache_path)
        try:
            try:
                h5 = h5py.File(journaled, "r+")
            except OSError as exc:
                raise CacheCorrupt(f"{cache_path}: cannot open as HDF5 ({exc}); the staged "
                                   f"items are kept in {staging_dir(cache_path)}") from None
            try:
                merged, merger, batches = _merge_into(h5, cache_path, config, feature_configs,
                                                      attrs, files, session, False, trusted)
            except BaseException:
                with contextlib.suppress(Exception):
                    h5.close()
                raise
            h5.close()
            journaled.finish(_wait_for_readers(cache_path, session.log))
        except BaseException:
            journaled.abort()
            raise
    session.known = merger.known(_stamp(cache_path))
    batches.report(cache_path)
    for f in batches.done:
        f.unlink(missing_ok=True)
    try:
        staging_dir(cache_path).rmdir()
    except OSError:
        pass
    return merged
