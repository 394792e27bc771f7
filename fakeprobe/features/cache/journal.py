"""In-place commits made crash-safe by an undo journal (``<cache>.journal``).

HDF5 is not crash-safe: killed in the middle of a write, a file can be left with half-updated
metadata. A commit therefore never lets HDF5 write the bytes the cache already holds until it
has saved them. The cache is opened through :class:`JournaledFile`, a file object for h5py:

1. Before anything is written, the journal's header (the cache's size ``base``) is written and
   flushed to disk.
2. HDF5 appends the new items: bytes at or past ``base`` go straight to the file; bytes below
   ``base`` (metadata, the last partly filled chunk of each dataset) are kept in memory, block
   by block, together with the blocks' original content.
3. :meth:`JournaledFile.finish`: the appended bytes are flushed; the exclusive reader lock is
   taken (see :func:`shared_lock`); the original content of every changed block is appended to
   the journal, sealed with a checksum and flushed; the changed blocks are written over the
   cache and flushed; then the journal is deleted. Deleting it is the commit point.

A commit killed before the seal leaves the bytes below ``base`` untouched: rolling back is
truncating the file to ``base``. Killed after the seal, the journal holds every original byte:
rolling back writes them back and truncates. :func:`recover` does either (a writer, holding the
writer lock, before its first commit); a reader that finds a sealed journal reads the cache as
it was before the commit (:class:`RolledBack`) without writing anything.

The cost of a commit is what it adds plus the blocks it changes below ``base`` (metadata and
the partly filled last chunks): it does not grow with the cache.

Readers and the commit point: a :class:`~fakeprobe.features.cache.CacheReader` holds a shared
``flock`` on the cache file while it is open; a commit takes it exclusively only to overwrite
the changed blocks, so a reader never sees a half-written file and a reader opened before a
commit never has the file change under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fakeprobe.fileio import fsync_dir

BLOCK = 4096
_MAGIC = b"FPJRNL02"
_SEAL = b"FPSEALED"
_HEADER = struct.Struct("<8sQ")  # magic, size of the cache before the commit
_ENTRY = struct.Struct("<QI")  # offset, length
_SEAL_RECORD = struct.Struct("<8sQI")  # seal, number of entries, crc32 of the entries

#: Environment variable naming a point of a commit where the process stops (tests kill it
#: there): ``journal-opened``, ``appended``, ``sealed``, ``overwriting``, ``overwritten``. The
#: process prints ``paused at <point>`` on stderr and waits to be killed.
PAUSE_VARIABLE = "FAKEPROBE_CACHE_PAUSE_AT"


def pause_point(name: str) -> None:
    """Stop here for good when :data:`PAUSE_VARIABLE` names this point (a test kills us)."""
    if os.environ.get(PAUSE_VARIABLE) == name:
        print(f"paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


def journal_path(cache_path: Path | str) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".journal")


@dataclass
class Journal:
    """A journal as read back: the cache's size before the commit and, once sealed, the
    original content of the blocks the commit overwrites (offset -> bytes)."""

    base: int
    sealed: bool
    blocks: dict[int, bytes] = field(default_factory=dict)


def read_journal(path: Path) -> Journal | None:
    """The journal at ``path``; ``None`` when there is none or its header is incomplete (the
    commit was killed before it wrote anything to the cache)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _HEADER.size or data[:8] != _MAGIC:
        return None
    base = _HEADER.unpack_from(data)[1]
    blocks: dict[int, bytes] = {}
    at = _HEADER.size
    start = at
    while at + _ENTRY.size <= len(data) and data[at:at + 8] != _SEAL:
        offset, length = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        if at + length > len(data):
            return Journal(base, False)
        blocks[offset] = data[at:at + length]
        at += length
    if at + _SEAL_RECORD.size <= len(data):
        seal, count, crc = _SEAL_RECORD.unpack_from(data, at)
        if seal == _SEAL and count == len(blocks) and crc == zlib.crc32(data[start:at]):
            return Journal(base, True, blocks)
    return Journal(base, False)


def recover(cache_path: Path, log: Callable[[str], None] | None = None) -> bool:
    """Roll back a commit that was killed: restore the cache from its journal and delete the
    journal. Call with the writer lock held. Return whether there was one."""
    path = journal_path(cache_path)
    if not path.exists():
        return False
    journal = read_journal(path)
    if journal is not None and cache_path.exists():
        fd = os.open(cache_path, os.O_RDWR)
        try:
            if journal.sealed:
                for offset, data in journal.blocks.items():
                    os.pwrite(fd, data, offset)
            os.ftruncate(fd, journal.base)
            os.fsync(fd)
        finally:
            os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
    if log is not None and journal is not None:
        log(f"{cache_path}: rolled back a commit that was interrupted (its journal "
            f"{path.name} restored the cache as it was); its items are still staged")
    return True


def shared_lock(cache_path: Path) -> int:
    """Open the cache and hold a shared lock on it (waiting while a commit overwrites it);
    return the descriptor, whose closing releases the lock."""
    fd = os.open(cache_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Base(io.RawIOBase):
    """Position bookkeeping shared by the two file views."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self.fd = fd
        self.size = size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _read(self, at: int, n: int, overlay: dict[int, bytes | bytearray], limit: int
              ) -> bytes:
        """``n`` bytes from ``at`` (short at the end of the file), blocks below ``limit`` taken
        from ``overlay`` (block index -> content) where it has them."""
        n = max(0, min(n, self.size - at))
        if n == 0:
            return b""
        data = bytearray(os.pread(self.fd, n, at))
        data.extend(bytes(n - len(data)))
        first, last = at // BLOCK, (min(at + n, limit) - 1) // BLOCK
        indices = (range(first, last + 1) if last - first < len(overlay)
                   else sorted(i for i in overlay if first <= i <= last))
        for index in indices:
            block = overlay.get(index)
            if block is None:
                continue
            lo = max(at, index * BLOCK)
            hi = min(at + n, index * BLOCK + len(block))
            if lo < hi:
                data[lo - at:hi - at] = block[lo - index * BLOCK:hi - index * BLOCK]
        return bytes(data)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)


class RolledBack(_Base):
    """A read-only view of a cache as it was before a commit that was killed after sealing
    its journal: the journal's blocks over the file, cut at the old size."""

    def __init__(self, cache_path: Path, journal: Journal) -> None:
        fd = os.open(cache_path, os.O_RDONLY)
        super().__init__(fd, journal.base)
        self.blocks = {offset // BLOCK: data for offset, data in journal.blocks.items()}

    def read(self, size: int = -1) -> bytes:
        n = self.size - self.pos if size is None or size < 0 else size
        data = self._read(self.pos, n, self.blocks, self.size)
        self.pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class JournaledFile(_Base):
    """The cache opened for an in-place commit (see the module docstring): give it to
    ``h5py.File(..., "r+")``, then call :meth:`finish` to commit or :meth:`abort` to roll
    back."""

    def __init__(self, cache_path: Path, pause: Callable[[str], None] = pause_point) -> None:
        self.path = Path(cache_path)
        self.journal = journal_path(self.path)
        self.pause = pause
        fd = os.open(self.path, os.O_RDWR)
        try:
            base = os.fstat(fd).st_size
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                       0o644)
        except BaseException:
            os.close(fd)
            raise
        super().__init__(fd, base)
        self.base = base
        self.blocks: dict[int, bytearray] = {}
        self.originals: dict[int, bytes] = {}
        self.sealed = False
        try:
            os.write(self._journal_fd, _HEADER.pack(_MAGIC, base))
            os.fsync(self._journal_fd)
            fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self.pause("journal-opened")

    # -- the file object h5py uses ------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self.size - self.pos if size is None or size < 0 else size
        data = self._read(self.pos, n, self.blocks, self.base)
        self.pos += len(data)
        return data

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n, at = len(view), self.pos
        below = max(0, min(at + n, self.base) - at)
        done = 0
        while done < below:
            index, inner = divmod(at + done, BLOCK)
            block = self._block(index)
            take = min(below - done, len(block) - inner)
            block[inner:inner + take] = view[done:done + take]
            done += take
        if n > below:
            self._append(view[below:], at + below)
        self.pos = at + n
        self.size = max(self.size, self.pos)
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if size >= self.base:
            os.ftruncate(self.fd, size)
        else:  # below the old end: the cut bytes read as zeros, kept by the journal
            os.ftruncate(self.fd, self.base)
            for index in range(size // BLOCK, (self.base - 1) // BLOCK + 1):
                block = self._block(index)
                start = max(0, size - index * BLOCK)
                block[start:] = bytes(len(block) - start)
        self.size = size
        return size

    def flush(self) -> None:
        pass

    def _block(self, index: int) -> bytearray:
        block = self.blocks.get(index)
        if block is None:
            start = index * BLOCK
            original = os.pread(self.fd, min(BLOCK, self.base - start), start)
            self.originals[index] = original
            block = self.blocks[index] = bytearray(original)
        return block

    def _append(self, view: memoryview, at: int) -> None:
        """Write bytes past the old end of the file (a rollback truncates them away)."""
        while len(view):
            written = os.pwrite(self.fd, view, at)
            view, at = view[written:], at + written

    # -- commit or roll back ------------------------------------------------------------------
    def finish(self, wait_for_readers: Callable[[int], None]) -> None:
        """Make the commit durable (see the module docstring); ``wait_for_readers(fd)`` takes
        the exclusive lock on the cache (released when the descriptor closes)."""
        os.fsync(self.fd)
        self.pause("appended")
        changed = {i: bytes(b) for i, b in self.blocks.items() if b != self.originals[i]}
        wait_for_readers(self.fd)
        entries = bytearray()
        for index in sorted(changed):
            original = self.originals[index]
            entries += _ENTRY.pack(index * BLOCK, len(original)) + original
        record = _SEAL_RECORD.pack(_SEAL, len(changed), zlib.crc32(entries))
        self._write_journal(bytes(entries) + record)
        os.fsync(self._journal_fd)
        self.sealed = True
        self.pause("sealed")
        for k, index in enumerate(sorted(changed)):
            os.pwrite(self.fd, changed[index], index * BLOCK)
            if k == 0:
                self.pause("overwriting")
        if self.size < self.base:
            os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        self.pause("overwritten")
        self._close_journal()
        self.journal.unlink()
        fsync_dir(self.path.parent)
        super().close()
        os.close(self.fd)

    def _write_journal(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            view = view[os.write(self._journal_fd, view):]

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def abort(self) -> None:
        """Roll back: the cache as it was before, the journal deleted."""
        with contextlib.suppress(OSError):
            if self.sealed:
                for index, original in self.originals.items():
                    os.pwrite(self.fd, original, index * BLOCK)
            os.ftruncate(self.fd, self.base)
            os.fsync(self.fd)
        self._close_journal()
        with contextlib.suppress(OSError):
            self.journal.unlink()
        fsync_dir(self.path.parent)
        if not self.closed:
            super().close()
            os.close(self.fd)

    def close(self) -> None:  # h5py closing its file object is not the end of the commit
        pass
