"""Atomic file writes: a crash or Ctrl-C leaves the old file or the new one, never half of one.

Every output fakeprobe writes (model files, run records, reports, fine-tuned networks, pseudo-fake
media, manifests) goes through :func:`atomic_path`: the content is written to a temporary name
beside the target (same folder, so the rename stays on one file system), flushed to disk, then
renamed over the target in one step, and the folder is flushed so the rename itself survives a
power cut. The temporary name keeps the target's suffix, so tools that pick a format from it
(OpenCV, FFmpeg, Keras, HDF5) still do.

Every command also passes each output path through :func:`check_output` before it starts work:
an output that is one of the command's inputs, or an existing file of another kind (a cache is
not a model, a video is not a CSV), is refused unless ``--force``; an unwritable folder or a
name too long is reported then, not after minutes of work. A write that fails (disk full,
read-only file system) raises :class:`~fakeprobe.errors.OutputError` with one line, and the old
file is left as it was.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from fakeprobe.errors import OutputError

#: OS errors that mean "this output cannot be written here" rather than a bug: reported as one
#: line (:class:`OutputError`).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.ENAMETOOLONG, errno.EFBIG, errno.EIO, errno.ENOTDIR,
                          errno.EISDIR})
#: Bytes a temporary or companion name may add to an output's name (``.NAME.PID.tmp``,
#: ``NAME.staging``, ``NAME.lock``): the name must leave room for them.
NAME_OVERHEAD = 24


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving the block it replaces ``path`` (after an
    fsync of the file, then of its folder), and on any error or interrupt it is removed and
    ``path`` is left as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in WRITE_ERRNOS:
            raise OutputError(f"{path}: cannot write it ({exc.strerror or exc}); "
                              f"{'the old file is left as it was' if path.exists() else 'nothing was written'}"
                              ) from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def temporary_name(path: Path) -> Path:
    """The hidden temporary name :func:`atomic_path` writes ``path`` under (it names the
    writing process, so a leftover of a killed run can be told from a live one's)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


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


# --- output paths ----------------------------------------------------------------------------

#: What each kind of output is called in messages, and the existing kinds it may replace.
OUTPUT_KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "cache": ("an HDF5 cache", frozenset({"hdf5"})),
    "model": ("a fakeprobe model file", frozenset({"model"})),
    "run": ("a run record (JSON)", frozenset({"run", "json"})),
    "json": ("a JSON file", frozenset({"run", "json"})),
    "html": ("an HTML report", frozenset({"html"})),
    "markdown": ("a markdown file", frozenset({"text"})),
    "csv": ("a CSV file", frozenset({"text"})),
    "keras": ("a Keras model", frozenset({"keras"})),
    "image": ("an image", frozenset({"image"})),
}
_KIND_NAMES = {
    "hdf5": "an HDF5 file (a fakeprobe cache?)", "model": "a fakeprobe model file",
    "keras": "a Keras model", "zip": "a zip archive", "run": "a fakeprobe run record",
    "json": "a JSON file", "html": "an HTML file", "text": "a text file", "image": "an image",
    "video": "a video", "binary": "a binary file",
}
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                            ".wmv", ".flv", ".3gp", ".ts", ".gif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_kind(path: Path | str) -> str:
    """What an existing file is, from its first bytes (and its suffix for media): ``hdf5``,
    ``model`` (a zip with ``provenance.json``), ``keras``, ``zip``, ``run``, ``json``, ``html``,
    ``image``, ``video``, ``text``, ``binary`` or ``empty``."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        return "empty"
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return "zip"
        if "provenance.json" in names:
            return "model"
        if "config.json" in names and "metadata.json" in names:
            return "keras"
        return "zip"
    if (any(head.startswith(magic) for magic in _IMAGE_MAGIC)
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        return "image"
    if (head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3")
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"FLV")
            or path.suffix.lower() in VIDEO_SUFFIXES):
        return "video"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if b"\x00" in head:
        return "binary"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype html", "<html")):
        return "html"
    if text.startswith(("{", "[")):  # a run record names its format first (runs.py)
        return "run" if re.search(r'"format"\s*:\s*"fakeprobe-run"', text) else "json"
    return "text"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: Path | str, kind: str, *, inputs: Iterable[Path | str] = (),
                 force: bool | None = False, option: str = "--out") -> Path:
    """Refuse an output path before any work is done; return it.

    Refused (:class:`OutputError`, one line): ``path`` is one of ``inputs`` (the same file, by
    any name); ``path`` is an existing folder; ``path`` is an existing file of another kind than
    ``kind`` (see :data:`OUTPUT_KINDS`) and ``force`` is not set (``None``: the command has no
    ``--force``); its folder cannot be created or written to; its name leaves no room for the
    temporary name it is written under.
    """
    path = Path(path)
    what, replaceable = OUTPUT_KINDS[kind]
    for source in inputs:
        source = Path(source)
        if source.exists() and path.exists() and _same_file(path, source) or (
                not path.exists() and path.resolve() == source.resolve()):
            raise OutputError(f"{option} {path} is one of the inputs; writing {what} there "
                              "would destroy it: give another path")
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name for {what}")
    if path.exists() and not force:
        try:
            found = file_kind(path)
        except OSError as exc:
            raise OutputError(f"{option} {path}: cannot read the existing file "
                              f"({exc.strerror or exc})") from None
        if found != "empty" and found not in replaceable:
            hint = "" if force is None else ", or --force to replace it"
            raise OutputError(f"{option} {path} exists and is {_KIND_NAMES[found]}, not "
                              f"{what}; give another path{hint}")
    check_writable(path, option=option)
    return path


def check_output_folder(folder: Path | str, *, inputs: Iterable[Path | str] = (),
                        option: str = "--out") -> Path:
    """Refuse an output folder that is an existing file or one of ``inputs``, or that cannot
    be created or written to; return it."""
    folder = Path(folder)
    for source in inputs:
        if Path(source).exists() and folder.exists() and _same_file(folder, Path(source)):
            raise OutputError(f"{option} {folder} is one of the inputs; give another folder")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} exists and is not a folder")
    check_writable(folder / "x", option=option)
    return folder


def check_writable(path: Path | str, *, option: str = "--out") -> None:
    """Raise :class:`OutputError` unless a file named ``path`` can be written: its name
    (with the temporary names written beside it) fits the file system, and a file can be
    created in its folder, or in the nearest existing folder above it (tried for real:
    permissions, read-only mounts and root all count; the probe is removed at once)."""
    path = Path(path)
    folder = path.parent
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is not a folder")
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    length = len(os.fsencode(path.name))
    if length + NAME_OVERHEAD > limit:
        raise OutputError(f"{option} {path}: the name is {length} bytes long; at most "
                          f"{limit - NAME_OVERHEAD} here (room is kept for the temporary "
                          "names it is written under)")
    try:  # in the folder, or in the nearest one that exists (nothing is created)
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".fakeprobe-", suffix=".probe"):
            pass
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write in {existing} "
                          f"({exc.strerror or exc})") from None


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (main thread only), then raise it, so a write the user
    wants finished (a cache commit, a checkpoint) is not cut in half. A kill cannot be
    deferred: those writes are atomic or journaled."""
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
