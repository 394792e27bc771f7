"""One writer at a time: the ``flock`` on ``<cache>.lock`` and what a killed writer left.

``extract`` and ``derive`` hold the lock for their whole run and a commit takes it too; a second
writer is refused at once with one line naming the holder. The lock is an ``flock``: the kernel
releases it when its holder ends, however it ends, so a stale lock file never blocks. On
acquiring it a writer clears what killed writers left: it rolls back a commit that was
interrupted (its journal), removes the unfinished copy a first commit was writing and the
temporary files of staged items.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fakeprobe.core.config import ROW_FIELDS, ExtractorConfig
from fakeprobe.errors import CacheError, CacheLocked
from fakeprobe.features.cache.journal import recover


def lock_path(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".lock")


def staging_dir(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".staging")


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
    #: What the last commit of this session left (see ``commit._Known``): the next commit
    #: trusts it instead of reading every item's id again, while the file is unchanged.
    known: Any = field(default=None, repr=False)


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
    recover(cache_path, log)
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


