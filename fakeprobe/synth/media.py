"""Pseudo-fake media files made from real ones: ``fakeprobe synth``.

Each real video or image is read frame by frame; the largest face of each frame is found,
self-blended (:mod:`fakeprobe.synth.blend`) with one parameter draw per item, so the manipulation
is consistent along the video, and the frame is written out. A ``labels.csv`` manifest lists
every pseudo-fake with its source real, both in one group, so ``fakeprobe extract labels.csv``
reads them as a labelled, grouped data set.

Writing re-encodes the video, which adds compression traces the source real does not carry. For
training, ``fakeprobe extract --self-blend`` is the cleaner path: it blends decoded frames in
memory and never re-encodes. ``synth`` is for looking at pseudo-fakes, for other tools, and for
the offline sample (:mod:`fakeprobe.synth.sample`), where reals and pseudo-fakes go through the
same encoder.
"""

from __future__ import annotations

import csv
import io
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from fakeprobe.datasets import REAL, SELF_BLEND_METHOD, MediaItem, discover
from fakeprobe.errors import FakeprobeError, MediaError
from fakeprobe.extractor.base import Detector
from fakeprobe.fileio import atomic_path, write_text
from fakeprobe.synth.blend import BlendConfig, BlendParams, draw_params, self_blend

#: Columns of the manifest ``synth`` writes (the ``extract`` CSV format plus the source id).
LABEL_COLUMNS = ("path", "label", "group", "dataset", "method", "source")
#: JPEG quality of pseudo-fake images made from JPEG sources (PNG sources stay PNG).
JPEG_QUALITY = 95
#: H.264 constant rate factor of written videos when FFmpeg is available (lower = better).
VIDEO_CRF = 18


def item_params(config: BlendConfig, seed: int, item_id: str, track: int = 0) -> BlendParams:
    """The blend parameters of one face track of one item: a function of the seed, the item's
    id and the track only, so a pseudo-fake is the same whichever tool or run makes it."""
    rng = np.random.default_rng([int(seed), zlib.crc32(item_id.encode("utf-8")), int(track)])
    return draw_params(config, rng)


def blend_faces(image: np.ndarray, faces: Iterable[tuple[np.ndarray, BlendParams]]) -> np.ndarray:
    """``image`` with every ``(landmarks, params)`` face self-blended in turn."""
    for landmarks, params in faces:
        image, _ = self_blend(image, landmarks, params)
    return image


class _VideoSink:
    """Writes BGR frames to a video: H.264 through FFmpeg when imageio-ffmpeg is installed
    (what most sources use), else OpenCV's MPEG-4 Part 2 encoder."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        self.path = path
        self._writer = None
        self._ffmpeg = None
        fps = fps if np.isfinite(fps) and fps > 0 else 25.0
        try:
            import imageio_ffmpeg
        except ImportError:
            imageio_ffmpeg = None
        if imageio_ffmpeg is not None and width % 2 == 0 and height % 2 == 0:
            self._ffmpeg = imageio_ffmpeg.write_frames(
                str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="bgr24",
                output_params=["-crf", str(VIDEO_CRF), "-preset", "veryfast"],
                macro_block_size=1, ffmpeg_log_level="error")
            self._ffmpeg.send(None)
        else:
            self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                           (width, height))
            if not self._writer.isOpened():
                raise MediaError(f"cannot write a video at {path}", status="write_error")

    def write(self, frame: np.ndarray) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.send(np.ascontiguousarray(frame))
        else:
            self._writer.write(frame)

    def close(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()
        elif self._writer is not None:
            self._writer.release()


@dataclass
class SynthResult:
    """One source item and what became of it."""

    source: MediaItem
    output: Path | None
    status: str  # "ok", "no_face" (written unchanged: no frame held a face) or a MediaError's
    frames: int = 0
    faces: int = 0
    error: str = ""
    params: dict | None = None


@dataclass
class SynthSummary:
    out_dir: str
    labels_csv: str
    written: int = 0
    failed: int = 0
    skipped_not_real: int = 0
    seconds: float = 0.0
    results: list[SynthResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir, "labels_csv": self.labels_csv, "written": self.written,
            "failed": self.failed, "skipped_not_real": self.skipped_not_real,
            "seconds": self.seconds, "problems": self.problems,
            "items": [{"source": r.source.id, "output": str(r.output) if r.output else None,
                       "status": r.status, "frames": r.frames, "faces": r.faces,
                       "error": r.error, "params": r.params} for r in self.results],
        }


def _output_path(out_dir: Path, item: MediaItem) -> Path:
    relative = Path(item.id)
    if item.kind == "image":
        suffix = ".jpg" if item.path.suffix.lower() in (".jpg", ".jpeg") else ".png"
    else:
        suffix = ".mp4"
    return out_dir / "self_blend" / relative.parent / f"{relative.stem}{suffix}"


def _largest(detector: Detector, image: np.ndarray) -> np.ndarray | None:
    from fakeprobe.extractor.detectors import select_largest

    faces = select_largest(detector.detect(image))
    return faces[0].landmarks if faces else None


def synthesize_item(item: MediaItem, out_path: Path, detector: Detector, config: BlendConfig,
                    seed: int, max_frames: int | None = None,
                    max_pixels: int = 40_000_000) -> SynthResult:
    """Write the pseudo-fake of one real item to ``out_path`` (atomically)."""
    from fakeprobe.extractor.frames import iter_video, read_image

    params = item_params(config, seed, item.id)
    frames = faces = 0
    with atomic_path(out_path) as tmp:
        if item.kind == "image":
            image = read_image(item.path, max_pixels)
            landmarks = _largest(detector, image)
            if landmarks is not None:
                image = blend_faces(image, [(landmarks, params)])
                faces = 1
            options = ([cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
                       if out_path.suffix == ".jpg" else [])
            if not cv2.imwrite(str(tmp), image, options):
                raise MediaError(f"cannot write {out_path}", status="write_error")
            frames = 1
        elif item.kind == "video":
            info, stream = iter_video(item.path, max_frames=max_frames, max_pixels=max_pixels)
            sink = None
            try:
                for frame in stream:
                    image = frame.image
                    if sink is None:
                        height, width = image.shape[:2]
                        sink = _VideoSink(tmp, info.fps, width, height)
                    landmarks = _largest(detector, image)
                    if landmarks is not None:
                        image = blend_faces(image, [(landmarks, params)])
                        faces += 1
                    sink.write(image)
                    frames += 1
            finally:
                if sink is not None:
                    sink.close()
            if frames == 0:
                raise MediaError("no frame could be decoded", status="decode_error")
        else:
            raise MediaError(f"synth reads videos and images, not {item.kind!r} items",
                             status="unsupported")
    return SynthResult(item, out_path, "ok" if faces else "no_face", frames, faces,
                       params=params.to_dict())


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def write_labels(path: Path, results: list[SynthResult]) -> None:
    """The manifest: each pseudo-fake and, once, its source real, sharing the source's group."""
    rows: dict[str, dict[str, str]] = {}
    for result in results:
        if result.output is None or result.status != "ok":
            continue
        source = result.source
        group = source.group or source.id
        rows.setdefault(source.id, {
            "path": _relative(source.path, path.parent), "label": "real", "group": group,
            "dataset": source.dataset, "method": source.method, "source": ""})
        rows[str(result.output)] = {
            "path": _relative(result.output, path.parent), "label": "fake", "group": group,
            "dataset": source.dataset, "method": SELF_BLEND_METHOD, "source": source.id}
    write_manifest(path, list(rows.values()))


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """A ``labels.csv`` (:data:`LABEL_COLUMNS`), atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=LABEL_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def synthesize(inputs: Iterable[Path | str], out_dir: Path | str, *,
               config: BlendConfig | None = None, seed: int = 0, detector: str = "yunet",
               detect_size: int = 640, max_frames: int | None = None,
               unlabelled_are_real: bool = True,
               progress: Callable[[MediaItem, SynthResult], None] | None = None,
               on_start: Callable[[int], None] | None = None) -> SynthSummary:
    """Write a self-blended pseudo-fake of every real item of ``inputs`` under ``out_dir`` and
    the manifest ``out_dir/labels.csv``. Items labelled fake are left out; unlabelled ones are
    taken as real footage unless ``unlabelled_are_real`` is false. Bad items are reported and
    the run goes on; finished files are kept when it is interrupted, and the manifest is written
    for them."""
    from fakeprobe.extractor.components import DETECTORS

    started = time.perf_counter()
    config = config or BlendConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = out_dir / "labels.csv"
    found = discover(inputs)
    summary = SynthSummary(str(out_dir), str(labels), problems=list(found.problems))
    items = []
    for item in found.items:
        if item.label == REAL or (item.label is None and unlabelled_are_real):
            items.append(item)
        else:
            summary.skipped_not_real += 1
    if not items:
        raise FakeprobeError("no real video or image among the inputs (items labelled fake are "
                             "left out)")
    made = DETECTORS.create(detector, device="cpu", detect_size=detect_size)
    if on_start:
        on_start(len(items))
    try:
        for item in sorted(items, key=lambda item: item.id):
            try:
                if not item.exists:
                    raise MediaError("file not found", status="missing")
                result = synthesize_item(item, _output_path(out_dir, item), made, config, seed,
                                         max_frames)
                summary.written += 1
            except MediaError as error:
                result = SynthResult(item, None, error.status, error=str(error))
                summary.failed += 1
            except (OSError, ValueError, cv2.error) as error:
                result = SynthResult(item, None, "error",
                                     error=f"{error.__class__.__name__}: {error}")
                summary.failed += 1
            summary.results.append(result)
            if progress:
                progress(item, result)
    finally:
        write_labels(labels, summary.results)
        summary.seconds = time.perf_counter() - started
    return summary
