"""Atomic file writes: a crash or Ctrl-C leaves the old file or the new one, never half of one.

Every output fakeprobe writes (model files, run records, reports, fine-tuned networks, pseudo-fake
media, manifests) goes through :func:`atomic_path`: the content is written to a temporary name
beside the target (same folder, so the rename stays on one file system), flushed to disk, then
renamed over the target in one step, and the folder is flushed so the rename itself survives a
power cut. The temporary name keeps the target's suffix, so tools that pick a format from it
(OpenCV, FFmpeg, Keras, HDF5) still do.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving the block it replaces ``path`` (after an
    fsync of the file, then of its folder), and on any error or interrupt it is removed and
    ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))
