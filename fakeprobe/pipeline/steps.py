"""The steps of extracting one item: choose the detector, find faces in the sampled frames
(linking them into tracks), and align the crops; each testable alone."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.geometry import ARCFACE_TEMPLATE_112, CropSpec
from fakeprobe.datasets import MediaItem
from fakeprobe.extractor.align import align_face
from fakeprobe.extractor.base import Detector, Face
from fakeprobe.extractor.components import DETECTORS
from fakeprobe.extractor.frames import Frame
from fakeprobe.features import cache as fcache
from fakeprobe.synth.blend import BlendConfig


@dataclass
class Prepared:
    """One item after the worker: its record, rows and aligned crops per crop geometry."""

    item: MediaItem
    kind: str  # "video" (new rows) or "features" (rows already cached)
    record: fcache.VideoRecord
    rows: fcache.FrameRows
    crops: dict[CropSpec, np.ndarray]
    backbones: tuple[str, ...]
    seconds: dict[str, float]


@dataclass(frozen=True)
class SelfBlend:
    """``extract --self-blend``: a pseudo-fake of every real item, blended in memory.

    The parameters of a face track come from ``seed``, the source item's id and the track
    (:func:`fakeprobe.synth.media.item_params`), so ``fakeprobe synth`` with the same seed and
    config writes the same blends to files."""

    config: "BlendConfig"
    seed: int = 0

    def to_attr(self) -> str:
        import json

        return json.dumps({"seed": self.seed, "config": self.config.to_dict()}, sort_keys=True)


def make_detector(config: ExtractorConfig, device: str = "auto",
                  weights: str | None = None) -> Detector:
    kwargs: dict = {"device": device, "detect_size": config.detect_size, "weights": weights}
    if config.min_face_score is not None:
        kwargs["min_score"] = config.min_face_score
    return DETECTORS.create(config.detector, **kwargs)


def centred_face(image: np.ndarray) -> Face:
    """The face of an image that *is* a face crop but where no face was detected: the ArcFace
    template's five points scaled to the image's shorter side and centred (the crop is taken
    as a tight face box), the whole image as the box, no detector score (NaN)."""
    height, width = image.shape[:2]
    side = float(min(height, width))
    marks = ARCFACE_TEMPLATE_112 / 112.0 * side
    marks = marks + np.array([(width - side) / 2.0, (height - side) / 2.0])
    return Face(box=(0.0, 0.0, float(width), float(height)), score=float("nan"),
                landmarks=marks.astype(np.float32))


def detect_rows(frames: list[Frame], detector: Detector, config: ExtractorConfig,
                seconds: dict[str, float], face_crop: bool = False
                ) -> tuple[fcache.FrameRows, list[int]]:
    """Rows for the sampled frames (one per kept face, or one no-face row), and for each row
    the position of its frame in ``frames``.

    ``face_crop``: the frames are face crops (``--face-crops``, images only): exactly one face
    each, the largest detected one (aligned on its landmarks), else :func:`centred_face`.
    """
    from fakeprobe.extractor.detectors import link_tracks, select_largest

    t0 = time.perf_counter()
    detected = [detector.detect(frame.image) for frame in frames]
    seconds["detect"] += time.perf_counter() - t0
    if face_crop:
        kept = [select_largest(faces) or [centred_face(frame.image)]
                for faces, frame in zip(detected, frames)]
        tracks = [[0] for _ in kept]
    elif config.all_faces:
        kept = detected
        tracks = link_tracks(kept, iou_threshold=config.track_iou)
    else:
        kept = [select_largest(faces) for faces in detected]
        tracks = [[0] * len(faces) for faces in kept]
    columns: dict[str, list] = defaultdict(list)
    origin: list[int] = []
    nan_box, nan_marks = np.full(4, np.nan, np.float32), np.full((5, 2), np.nan, np.float32)
    for position, (frame, faces, ids) in enumerate(zip(frames, kept, tracks)):
        entries: list[tuple[Face | None, int]] = list(zip(faces, ids)) or [(None, -1)]
        for face, track in entries:
            columns["frame_index"].append(frame.index)
            columns["timestamp"].append(frame.timestamp)
            columns["box"].append(np.asarray(face.box, np.float32) if face else nan_box)
            columns["landmarks"].append(face.landmarks if face else nan_marks)
            columns["score"].append(face.score if face else np.nan)
            columns["track"].append(track)
            columns["has_face"].append(face is not None)
            origin.append(position)
    rows = fcache.FrameRows(
        frame_index=np.asarray(columns["frame_index"], np.int64),
        timestamp=np.asarray(columns["timestamp"], np.float64),
        box=np.asarray(columns["box"], np.float32).reshape(-1, 4),
        landmarks=np.asarray(columns["landmarks"], np.float32).reshape(-1, 5, 2),
        score=np.asarray(columns["score"], np.float32),
        track=np.asarray(columns["track"], np.int32),
        has_face=np.asarray(columns["has_face"], np.bool_),
    )
    return rows, origin


def align_rows(frames: list[Frame], rows: fcache.FrameRows, origin: list[int],
               specs: Iterable[CropSpec]) -> dict[CropSpec, np.ndarray]:
    """Aligned crops of every row with a face, per crop geometry (rows without a face are
    left out: the crops follow ``rows.has_face``)."""
    out = {}
    face_rows = np.flatnonzero(rows.has_face)
    for spec in specs:
        crops = np.zeros((len(face_rows), spec.size, spec.size, 3), np.uint8)
        for k, row in enumerate(face_rows):
            crops[k] = align_face(frames[origin[row]].image, rows.landmarks[row], spec)
        out[spec] = crops
    return out
