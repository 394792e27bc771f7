"""Receiving an upload: the multipart body streamed to a private folder under a size limit,
then the file told by its content (first bytes, then a decode), never by its name.

Every refusal is an :class:`UploadRejected` with the HTTP status it answers: 400 (no file,
empty, not multipart), 413 (over the size, pixel or frame limits), 415 (not a video or an
image), 422 (a media file that does not decode: truncated or damaged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fakeprobe.errors import FakeprobeError, MediaError

#: Form field that carries the file, and the text fields a submission may add.
FILE_FIELD = "file"
TEXT_FIELDS = ("model",)
#: Bytes of a text field, and of the body beyond the file (boundaries, part headers).
MAX_FIELD_BYTES = 1024
MULTIPART_OVERHEAD = 64 * 1024
#: What :func:`fakeprobe.fileio.file_kind` calls a file, in words for a refusal.
_KIND_WORDS = {
    "hdf5": "an HDF5 file", "model": "a model file", "keras": "a Keras model",
    "zip": "a zip archive", "run": "a JSON file", "json": "a JSON file", "html": "an HTML file",
    "text": "a text file", "binary": "a binary file of an unknown kind",
}


class UploadRejected(FakeprobeError):
    """An upload that is refused; ``status_code`` is the HTTP answer (4xx)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class Received:
    """One uploaded file on disk (not yet checked) and the form's text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def _disposition(value: bytes) -> tuple[str, str | None]:
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(value)
    name = params.get(b"name", b"").decode("utf-8", "replace")
    filename = params.get(b"filename")
    return name, None if filename is None else filename.decode("utf-8", "replace")


async def receive(request, target: Path, limit: int) -> Received:
    """Stream the multipart body of ``request`` into ``target`` (created with mode 0600),
    refusing it as soon as the file passes ``limit`` bytes. One file per request, in the
    ``file`` field; the client's file name is kept only as text to show."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadRejected("send the file as multipart/form-data in a field named 'file'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise UploadRejected(f"the upload ({int(declared) / 1e6:.1f} MB) is over the limit of "
                             f"{limit / 1e6:.1f} MB", 413)
    state = {"header": b"", "value": b"", "headers": {}, "name": "", "size": 0, "files": 0}
    received = Received(target, "", 0)
    text: dict[str, bytearray] = {}
    handle = None

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal handle
        name, filename = _disposition(state["headers"].get(b"content-disposition", b""))
        state["name"] = name
        if name == FILE_FIELD:
            state["files"] += 1
            if state["files"] > 1:
                raise UploadRejected("one file per request: send each file as its own job")
            received.filename = (filename or "upload")[-200:]
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            handle = os.fdopen(descriptor, "wb")
        elif name in TEXT_FIELDS:
            text[name] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        name = state["name"]
        if name == FILE_FIELD and handle is not None:
            received.size += end - start
            if received.size > limit:
                raise UploadRejected(f"the file is over the limit of {limit / 1e6:.1f} MB", 413)
            handle.write(data[start:end])
        elif name in text:
            text[name] += data[start:end]
            if len(text[name]) > MAX_FIELD_BYTES:
                raise UploadRejected(f"the field {name!r} is too long")

    def on_part_end() -> None:
        nonlocal handle
        if state["name"] == FILE_FIELD and handle is not None:
            handle.close()
            handle = None

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        _discard(target)
        raise UploadRejected(f"the multipart body does not parse ({exc})") from None
    except BaseException:
        _discard(target)
        raise
    finally:
        if handle is not None:
            handle.close()
    if not state["files"]:
        _discard(target)
        raise UploadRejected("no file: send it in a multipart field named 'file'")
    received.fields = {k: bytes(v).decode("utf-8", "replace").strip() for k, v in text.items()}
    return received


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class Checked:
    """An upload that decodes: its kind, the suffix the extractor reads it by, its size."""

    kind: str  # video or image
    suffix: str
    width: int
    height: int
    n_frames: int


def _suffix(head: bytes, kind: str) -> str:
    """The file name suffix that makes the extractor read ``head``'s media as what it is."""
    if kind == "image":
        for magic, suffix in ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"),
                              (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif")):
            if head.startswith(magic):
                return suffix
        return ".webp"
    if head[4:8] == b"ftyp":
        return ".mov" if head[8:12] == b"qt  " else ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".mkv"
    if head[:4] == b"RIFF":
        return ".avi"
    if head.startswith(b"FLV"):
        return ".flv"
    return ".mpg"


def check_media(path: Path, *, max_pixels: int, max_frames: int) -> Checked:
    """Tell what ``path`` holds from its bytes and decode enough of it to know it reads.

    Raises :class:`UploadRejected`: 400 empty, 415 not a video or image, 413 too many pixels
    or frames, 422 truncated or damaged (the header or the first frame does not decode)."""
    from fakeprobe.fileio import file_kind

    kind = file_kind(path)  # the upload's name has no media suffix: content decides
    if kind == "empty":
        raise UploadRejected("the file is empty (0 bytes)")
    if kind not in ("image", "video"):
        raise UploadRejected(f"not a video or an image: the file is "
                             f"{_KIND_WORDS.get(kind, 'of an unknown kind')}", 415)
    with open(path, "rb") as handle:
        head = handle.read(16)
    suffix = _suffix(head, kind)
    if suffix == ".gif":  # OpenCV reads a GIF as a video, as the extractor does
        kind = "video"
    if kind == "image":
        return _check_image(path, suffix, max_pixels)
    return _check_video(path, suffix, max_pixels, max_frames)


def _check_image(path: Path, suffix: str, max_pixels: int) -> Checked:
    import warnings

    from PIL import Image

    from fakeprobe.extractor.frames import read_image

    try:
        image = read_image(path, max_pixels)
    except MediaError as exc:
        if exc.status == "too_large":
            raise UploadRejected(str(exc), 413) from None
        raise UploadRejected(f"the image does not decode: truncated or damaged ({exc})",
                             422) from None
    try:  # OpenCV fills a cut-off JPEG with grey; Pillow says it is truncated
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as full:
                full.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadRejected(f"the image is truncated or damaged ({exc})", 422) from None
    return Checked("image", suffix, image.shape[1], image.shape[0], 1)


def _check_video(path: Path, suffix: str, max_pixels: int, max_frames: int) -> Checked:
    from fakeprobe.extractor.frames import iter_video

    try:
        info, frames = iter_video(path, max_frames=1, max_pixels=max_pixels)
        first = next(frames, None)
        frames.close()
    except MediaError as exc:
        if exc.status == "too_large":
            raise UploadRejected(str(exc), 413) from None
        raise UploadRejected(f"the video does not decode: truncated, damaged or an "
                             f"unsupported codec ({exc})", 422) from None
    if first is None:
        raise UploadRejected("the video does not decode: truncated or damaged (no frame "
                             "decodes)", 422)
    if info.n_frames > max_frames:
        raise UploadRejected(f"the video has {info.n_frames} frames, over the limit of "
                             f"{max_frames}", 413)
    return Checked("video", suffix, info.width, info.height, info.n_frames)
