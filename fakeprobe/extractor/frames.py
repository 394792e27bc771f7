"""Decoding and frame sampling for videos, still images and folders of frames.

Videos are decoded by PyAV, which is handed only the packets the sampled frames need
(:mod:`fakeprobe.extractor.video_av`); a file PyAV cannot open falls back to one sequential
OpenCV ``grab()`` loop that ``retrieve()``s (converts) only the frames kept. Rotation metadata is
honoured, so portrait phone videos come out upright.

Every read is guarded against hostile files: sizes come from the header and are checked before
anything is decoded (``--max-pixels``, and :data:`MAX_DECODE_BYTES` for all the sampled frames
of one item together); a video that yields fewer frames than its container lists is flagged
(:attr:`MediaInfo.warning`); a file name that is not valid UTF-8 is read through an open file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fakeprobe.core.schema import IMAGE_SUFFIXES
from fakeprobe.errors import MediaError

try:  # PyAV decodes videos; loaded with OpenCV here so that the first video read does not pay
    import av  # noqa: F401  (FFmpeg's libraries: a good part of a second on a busy machine)
except ImportError:  # not installed: OpenCV reads every video
    av = None

#: The most memory the decoded frames of one item may take (all the sampled frames are held
#: while faces are detected and aligned): 4 GiB, enough for the default 32 frames at the largest
#: frame ``--max-pixels`` allows by default (32 x 40 Mpx x 3 bytes = 3.8 GB). An item that would
#: need more is refused as ``too_large``, so memory stays bounded by about this much per worker.
MAX_DECODE_BYTES = 4 * 1024**3
#: Frames a container may list beyond those that decode before a video counts as truncated:
#: some containers (WebM, MKV) estimate their frame count from the duration.
_COUNT_SLACK = 2


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a media item. ``fps`` is NaN for images and frame folders."""

    fps: float
    width: int
    height: int
    n_frames: int
    #: Why the frames read may not be what was asked for (e.g. a truncated video); empty when
    #: all is well. The extractor stores it as the item's ``error`` and prints it.
    warning: str = ""


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp: float  # seconds from the start; NaN when the rate is unknown
    image: np.ndarray  # (H, W, 3) uint8 BGR


def sample_indices(
    n_frames: int, *, count: int, fps: float | None = None, video_fps: float = float("nan"),
    max_frames: int = 300,
) -> np.ndarray:
    """Indices of the frames to keep out of ``n_frames``.

    Without ``fps``: ``count`` evenly spaced frames from the first to the last (all of them when
    the video is shorter). With ``fps``: one frame every ``1/fps`` seconds of the video's own rate,
    at most ``max_frames``.
    """
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if fps is None or not np.isfinite(video_fps) or video_fps <= 0:
        if n_frames <= count:
            return np.arange(n_frames, dtype=np.int64)
        return np.unique(np.round(np.linspace(0, n_frames - 1, count)).astype(np.int64))
    step = max(video_fps / fps, 1.0)
    # only the first max_frames are kept: never build the index of a claimed billion frames
    stop = min(float(n_frames), (max_frames + 1) * step)
    indices = np.unique(np.floor(np.arange(0, stop, step)).astype(np.int64))
    return indices[:max_frames]


def check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise MediaError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} Mpx), over the limit of "
            f"{max_pixels / 1e6:.0f} Mpx (--max-pixels)",
            status="too_large",
        )


def check_memory(n_frames: int, width: int, height: int) -> None:
    need = n_frames * width * height * 3
    if need > MAX_DECODE_BYTES:
        raise MediaError(
            f"{n_frames} sampled frames of {width}x{height} would take {need / 1e9:.1f} GB of "
            f"memory, over the {MAX_DECODE_BYTES / 1024**3:.0f} GiB one item may use; sample "
            "fewer frames (--frames, or --fps with --max-frames)", status="too_large")


def _opencv_name(path: Path) -> str | None:
    """``path`` as OpenCV takes it, or None for a name that is not valid UTF-8 (its bytes are
    kept as lone surrogates, which OpenCV's string conversion does not survive: it crashes)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


class _StreamCapture:
    """A ``cv2.VideoCapture`` reading an open file through FFmpeg, for names OpenCV cannot
    take. OpenCV keeps no reference to the file object, so this one holds it and closes it
    after the capture is released."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "rb")
        try:
            self._capture = cv2.VideoCapture(self._handle, cv2.CAP_FFMPEG, [])
        except (TypeError, cv2.error, SystemError):
            self._handle.close()
            raise MediaError("the file name is not valid UTF-8 and this OpenCV cannot read "
                             "from a stream (needs opencv-python 4.10 or later); rename the "
                             "file") from None

    def __getattr__(self, name: str):
        return getattr(self._capture, name)

    def release(self) -> None:
        self._capture.release()
        self._handle.close()


def _open_video(path: Path) -> cv2.VideoCapture:
    # FFmpeg's own messages ("moov atom not found") would garble the progress bar; fakeprobe
    # reports each failure in one line instead. A user's own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    name = _opencv_name(path)
    capture = (cv2.VideoCapture(name, cv2.CAP_ANY) if name is not None
               else _StreamCapture(path))
    if not capture.isOpened():
        capture.release()
        raise MediaError("cannot open as a video (not a video, corrupt, or unsupported codec)")
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return capture


def _count_frames(path: Path) -> int:
    """Frames a video really holds, by grabbing them all (for containers that do not say)."""
    capture = _open_video(path)
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def video_info(path: Path) -> MediaInfo:
    """Rate, size and frame count of a video as the container says, without decoding it
    (OpenCV reports the size after rotation metadata is applied)."""
    capture = _open_video(path)
    try:
        return _info_from_capture(capture)
    finally:
        capture.release()


def _info_from_capture(capture: cv2.VideoCapture) -> MediaInfo:
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return MediaInfo(fps=fps if fps > 0 else float("nan"), width=width, height=height,
                     n_frames=n_frames)


def read_video(
    path: Path, indices: np.ndarray | None = None, *, count: int = 32, fps: float | None = None,
    max_frames: int = 300, max_pixels: int = 40_000_000, keyframes_only: bool = False,
) -> tuple[MediaInfo, list[Frame]]:
    """Decode the sampled frames of a video.

    ``indices`` chooses the frames (used to re-read the rows of a cache); otherwise they follow
    ``count``/``fps``. A truncated video gives the frames before the damage. PyAV decodes only
    what the sampled frames need (:mod:`fakeprobe.extractor.video_av`); a file it cannot open
    is read by OpenCV in one sequential pass. ``keyframes_only`` takes the key frame nearest
    each sampled frame instead (much faster on long videos; see ``read_keyframes``).
    """
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    from fakeprobe.extractor import video_av

    read = video_av.read_video_av(path, indices, count=count, fps=fps, max_frames=max_frames,
                                  max_pixels=max_pixels, keyframes_only=keyframes_only)
    if read is not None:
        return read
    return read_video_opencv(path, indices, count=count, fps=fps, max_frames=max_frames,
                             max_pixels=max_pixels)


def read_video_opencv(
    path: Path, indices: np.ndarray | None = None, *, count: int = 32, fps: float | None = None,
    max_frames: int = 300, max_pixels: int = 40_000_000,
) -> tuple[MediaInfo, list[Frame]]:
    """The sampled frames of a video from one sequential OpenCV ``grab()`` pass (every frame
    decoded): the fallback for files PyAV cannot open, and the reference it is tested against.
    """
    capture = _open_video(path)
    try:
        info = _info_from_capture(capture)
        check_size(info.width, info.height, max_pixels, "the video frame")
        if info.n_frames <= 0:  # the container does not say: count by decoding
            capture.release()
            info = MediaInfo(info.fps, info.width, info.height, _count_frames(path))
            if info.n_frames == 0:
                raise MediaError("the video holds no decodable frame", status="empty")
            capture = _open_video(path)
        wanted = np.asarray(indices if indices is not None else sample_indices(
            info.n_frames, count=count, fps=fps, video_fps=info.fps, max_frames=max_frames
        ), dtype=np.int64)
        check_memory(len(wanted), info.width, info.height)
        grabbed = [0]
        frames = list(_grab_frames(capture, wanted, info.fps, grabbed))
    finally:
        capture.release()
    if not frames:
        raise MediaError("no frame could be decoded (corrupt or truncated video)")
    height, width = frames[0].image.shape[:2]  # upright size, after any rotation
    return MediaInfo(info.fps, width, height, info.n_frames,
                     truncation(info.n_frames, grabbed[0], wanted, len(frames))), frames


def truncation(n_frames: int, grabbed: int, wanted: np.ndarray, n_read: int) -> str:
    """A warning when decoding stopped well before the frames the container lists (a cut or
    damaged file), else ""."""
    last = int(wanted.max()) if wanted.size else -1
    if grabbed > last or grabbed >= n_frames - _COUNT_SLACK:
        return ""
    return (f"truncated or corrupt: decoding stopped at frame {grabbed} of the {n_frames} the "
            f"container lists; {n_read} of {len(wanted)} sampled frames read")


def iter_video(path: Path, *, max_frames: int | None = None,
               max_pixels: int = 40_000_000) -> tuple[MediaInfo, Iterator[Frame]]:
    """Every frame of a video in order (upright), one at a time, for tools that rewrite a
    video. The info's ``n_frames`` is what the container says (may be 0 when it does not)."""
    capture = _open_video(path)
    try:
        info = _info_from_capture(capture)
        check_size(info.width, info.height, max_pixels, "the video frame")
    except BaseException:
        capture.release()
        raise

    def frames() -> Iterator[Frame]:
        try:
            index = 0
            while max_frames is None or index < max_frames:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                yield Frame(index, index / info.fps if np.isfinite(info.fps) else float("nan"),
                            image)
                index += 1
        finally:
            capture.release()

    return info, frames()


def _grab_frames(capture: cv2.VideoCapture, wanted: np.ndarray, fps: float,
                 grabbed: list[int] | None = None) -> Iterator[Frame]:
    """The ``wanted`` frames; ``grabbed[0]`` counts the frames decoded on the way."""
    grabbed = grabbed if grabbed is not None else [0]
    if wanted.size == 0:
        return
    keep = set(int(i) for i in wanted)
    last = int(wanted.max())
    for index in range(last + 1):
        if not capture.grab():
            return  # truncated: the container promised more frames than it holds
        grabbed[0] = index + 1
        if index in keep:
            ok, image = capture.retrieve()
            if ok and image is not None:
                yield Frame(index, index / fps if np.isfinite(fps) else float("nan"), image)


def read_image(path: Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """One still image as BGR uint8 (EXIF orientation applied), size checked before decoding.

    The file's bytes are read by Python and decoded from memory, so any file name works."""
    size = path.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError:  # the header claims a giant image
        raise MediaError(f"the image header claims over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                         f"Mpx, over the limit of {max_pixels / 1e6:.0f} Mpx (--max-pixels)",
                         status="too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"cannot read as an image ({exc.__class__.__name__})") from None
    check_size(width, height, max_pixels, "the image")
    # a file far larger than its pixels could need is not an image we should load
    if size > 8 * max_pixels + 2**20:
        raise MediaError(f"the file ({size / 1e6:.0f} MB) is far larger than a {width}x{height} "
                         "image needs", status="too_large")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError("cannot decode the image (corrupt or unsupported)")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied
        check_size(image.shape[1], image.shape[0], max_pixels, "the decoded image")
    return image


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """Image files of a folder of frames, in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def read_frame_folder(
    folder: Path, indices: np.ndarray | None = None, *, count: int = 32,
    max_pixels: int = 40_000_000,
) -> tuple[MediaInfo, list[Frame]]:
    """A folder of frames read as one video with an unknown rate."""
    files = frame_files(folder)
    if not files:
        raise MediaError("the folder holds no image", status="empty")
    wanted = indices if indices is not None else sample_indices(len(files), count=count)
    frames = []
    held = 0
    for index in wanted:
        if 0 <= index < len(files):
            frames.append(Frame(int(index), float("nan"), read_image(files[index], max_pixels)))
            held += frames[-1].image.nbytes
            if held > MAX_DECODE_BYTES:
                raise MediaError(
                    f"{len(wanted)} sampled frames of this folder would take over the "
                    f"{MAX_DECODE_BYTES / 1024**3:.0f} GiB one item may use; sample fewer "
                    "frames (--frames)", status="too_large")
    height, width = frames[0].image.shape[:2] if frames else (0, 0)
    return MediaInfo(float("nan"), width, height, len(files)), frames


def read_media(
    path: Path, kind: str, indices: np.ndarray | None = None, *, count: int = 32,
    fps: float | None = None, max_frames: int = 300, max_pixels: int = 40_000_000,
    keyframes_only: bool = False,
) -> tuple[MediaInfo, list[Frame]]:
    """The sampled frames of any media item (an image is one frame, index 0).
    ``keyframes_only`` applies to videos only."""
    if not path.exists():
        raise MediaError("file not found", status="missing")
    if kind == "video":
        return read_video(path, indices, count=count, fps=fps, max_frames=max_frames,
                          max_pixels=max_pixels, keyframes_only=keyframes_only)
    if kind == "image":
        image = read_image(path, max_pixels)
        height, width = image.shape[:2]
        return MediaInfo(float("nan"), width, height, 1), [Frame(0, float("nan"), image)]
    if kind == "frames":
        return read_frame_folder(path, indices, count=count, max_pixels=max_pixels)
    raise MediaError(f"unsupported media kind {kind!r}", status="unsupported")
