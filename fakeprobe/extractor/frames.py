"""Decoding and frame sampling for videos, still images and folders of frames.

Videos are read with one sequential ``grab()`` loop that ``retrieve()``s (converts) only the
frames kept: seeking with ``CAP_PROP_POS_FRAMES`` re-decodes from the previous key frame for every
frame and measured about 8x slower. Rotation metadata is honoured, so portrait phone videos come
out upright.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fakeprobe.errors import MediaError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a media item. ``fps`` is NaN for images and frame folders."""

    fps: float
    width: int
    height: int
    n_frames: int


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp: float  # seconds from the start; NaN when the rate is unknown
    image: np.ndarray  # (H, W, 3) uint8 BGR


def media_kind(path: Path) -> str | None:
    """``video``, ``image``, ``frames`` (a folder of frames) or None for anything else."""
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


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
    indices = np.unique(np.floor(np.arange(0, n_frames, step)).astype(np.int64))
    return indices[:max_frames]


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise MediaError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} Mpx), over the limit of "
            f"{max_pixels / 1e6:.0f} Mpx (--max-pixels)",
            status="too_large",
        )


def _open_video(path: Path) -> cv2.VideoCapture:
    # FFmpeg's own messages ("moov atom not found") would garble the progress bar; fakeprobe
    # reports each failure in one line instead. A user's own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY)
    if not capture.isOpened():
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
    max_frames: int = 300, max_pixels: int = 40_000_000,
) -> tuple[MediaInfo, list[Frame]]:
    """Decode the sampled frames of a video in one sequential pass.

    ``indices`` chooses the frames (used to re-read the rows of a cache); otherwise they follow
    ``count``/``fps``. A truncated video gives the frames before the damage.
    """
    capture = _open_video(path)
    try:
        info = _info_from_capture(capture)
        _check_size(info.width, info.height, max_pixels, "the video frame")
        if info.n_frames <= 0:  # the container does not say: count by decoding
            capture.release()
            info = MediaInfo(info.fps, info.width, info.height, _count_frames(path))
            if info.n_frames == 0:
                raise MediaError("the video holds no decodable frame", status="empty")
            capture = _open_video(path)
        wanted = indices if indices is not None else sample_indices(
            info.n_frames, count=count, fps=fps, video_fps=info.fps, max_frames=max_frames
        )
        frames = list(_grab_frames(capture, np.asarray(wanted, dtype=np.int64), info.fps))
    finally:
        capture.release()
    if not frames:
        raise MediaError("no frame could be decoded (corrupt or truncated video)")
    height, width = frames[0].image.shape[:2]  # upright size, after any rotation
    return MediaInfo(info.fps, width, height, info.n_frames), frames


def iter_video(path: Path, *, max_frames: int | None = None,
               max_pixels: int = 40_000_000) -> tuple[MediaInfo, Iterator[Frame]]:
    """Every frame of a video in order (upright), one at a time, for tools that rewrite a
    video. The info's ``n_frames`` is what the container says (may be 0 when it does not)."""
    capture = _open_video(path)
    try:
        info = _info_from_capture(capture)
        _check_size(info.width, info.height, max_pixels, "the video frame")
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


def _grab_frames(capture: cv2.VideoCapture, wanted: np.ndarray, fps: float) -> Iterator[Frame]:
    if wanted.size == 0:
        return
    keep = set(int(i) for i in wanted)
    last = int(wanted.max())
    for index in range(last + 1):
        if not capture.grab():
            return  # truncated: the container promised more frames than it holds
        if index in keep:
            ok, image = capture.retrieve()
            if ok and image is not None:
                yield Frame(index, index / fps if np.isfinite(fps) else float("nan"), image)


def read_image(path: Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """One still image as BGR uint8 (EXIF orientation applied), size checked before decoding."""
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as header:  # reads the header only
            width, height = header.size
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"cannot read as an image ({exc.__class__.__name__})") from None
    _check_size(width, height, max_pixels, "the image")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError("cannot decode the image (corrupt or unsupported)")
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
    for index in wanted:
        if 0 <= index < len(files):
            frames.append(Frame(int(index), float("nan"), read_image(files[index], max_pixels)))
    height, width = frames[0].image.shape[:2] if frames else (0, 0)
    return MediaInfo(float("nan"), width, height, len(files)), frames


def read_media(
    path: Path, kind: str, indices: np.ndarray | None = None, *, count: int = 32,
    fps: float | None = None, max_frames: int = 300, max_pixels: int = 40_000_000,
) -> tuple[MediaInfo, list[Frame]]:
    """The sampled frames of any media item (an image is one frame, index 0)."""
    if not path.exists():
        raise MediaError("file not found", status="missing")
    if kind == "video":
        return read_video(path, indices, count=count, fps=fps, max_frames=max_frames,
                          max_pixels=max_pixels)
    if kind == "image":
        image = read_image(path, max_pixels)
        height, width = image.shape[:2]
        return MediaInfo(float("nan"), width, height, 1), [Frame(0, float("nan"), image)]
    if kind == "frames":
        return read_frame_folder(path, indices, count=count, max_pixels=max_pixels)
    raise MediaError(f"unsupported media kind {kind!r}", status="unsupported")
