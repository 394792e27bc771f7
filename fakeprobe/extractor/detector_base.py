"""What every face detector shares: frame checks, the shrunk copy it detects on, mapping boxes
and landmarks back to the full-resolution frame, score filtering and one model per thread (see
:mod:`fakeprobe.extractor.detectors` for the contract every detector keeps)."""

from __future__ import annotations

import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakeprobe.core.checksums import package_dir
from fakeprobe.core.config import DEFAULT_DETECT_SIZE
from fakeprobe.core.tf import check_device
from fakeprobe.errors import ConfigError, WeightsError
from fakeprobe.extractor.base import Detector, Face

__all__ = ["DEFAULT_DETECT_SIZE", "bundled_file"]


# --------------------------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------------------------- #
def bundled_file(module: str, relative: str, what: str, install: str) -> Path:
    folder = package_dir(module)
    if folder is None:
        raise WeightsError(
            f"the {what} weights ship inside the {module!r} package, which is not installed "
            f"({install}), or pass weights=<path to a copy>"
        )
    return folder / relative


# --------------------------------------------------------------------------------------------- #
# The part every detector shares: shrink, detect, map back
# --------------------------------------------------------------------------------------------- #
def _check_frame(frame: Any) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ConfigError("a frame must be a uint8 numpy array")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ConfigError(f"a frame must have shape (H, W, 3) in BGR order, not {frame.shape}")
    return frame


def _shrink(frame: np.ndarray, detect_size: int) -> tuple[np.ndarray, float, float]:
    """``frame`` shrunk to a longer side of at most ``detect_size``, and the x and y factors
    that take the copy's coordinates back to the frame's."""
    height, width = frame.shape[:2]
    longest = max(height, width)
    if longest <= detect_size:
        return frame, 1.0, 1.0
    scale = detect_size / longest
    new_w = max(1, int(round(width * scale)))
    new_h = max(1, int(round(height * scale)))
    small = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, width / new_w, height / new_h


class _ShrinkingDetector(Detector):
    """Base class: validation, shrinking, mapping back, filtering and the per-thread model."""

    name = ""
    default_min_score = 0.0

    def __init__(
        self,
        device: str = "auto",
        weights: str | Path | None = None,
        min_score: float | None = None,
        detect_size: int = DEFAULT_DETECT_SIZE,
    ) -> None:
        self.device = check_device(device)
        self.weights = None if weights is None else Path(weights)
        self.min_score = float(self.default_min_score if min_score is None else min_score)
        if int(detect_size) < 32:
            raise ConfigError(f"detect_size must be at least 32 pixels, not {detect_size}")
        self.detect_size = int(detect_size)
        self._local = threading.local()

    # -- to implement --------------------------------------------------------------------------
    @abstractmethod
    def _new_model(self) -> Any:
        """A fresh model object for the calling thread."""

    @abstractmethod
    def _detect_small(
        self, model: Any, small_bgr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces in the shrunk copy: boxes ``(n, 4)`` x, y, w, h; landmarks ``(n, 5, 2)`` in the
        order of ``base.py``; scores ``(n,)``; all in the copy's pixel coordinates."""

    # -- shared --------------------------------------------------------------------------------
    def _model(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._new_model()
            self._local.model = model
        return model

    def detect(self, frame: np.ndarray) -> list[Face]:
        frame = _check_frame(frame)
        height, width = frame.shape[:2]
        small, sx, sy = _shrink(frame, self.detect_size)
        boxes, landmarks, scores = self._detect_small(self._model(), small)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        faces = []
        factor = np.array([sx, sy])
        for box, points, score in zip(boxes, landmarks, scores):
            if not np.isfinite(score) or score < self.min_score:
                continue
            if not (np.all(np.isfinite(box)) and np.all(np.isfinite(points))):
                continue
            # Pixel centres: small pixel i covers full-resolution [i * s, (i + 1) * s).
            points = (points + 0.5) * factor - 0.5
            x0, y0 = (box[:2] + 0.5) * factor - 0.5
            x1, y1 = x0 + box[2] * sx, y0 + box[3] * sy
            x0, x1 = max(0.0, x0), min(float(width), x1)
            y0, y1 = max(0.0, y0), min(float(height), y1)
            if x1 <= x0 or y1 <= y0:
                continue
            faces.append(
                Face(
                    box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                    landmarks=points.astype(np.float32),
                    score=float(score),
                )
            )
        faces.sort(key=lambda face: -face.score)
        return faces

    def config(self) -> dict:
        return {
            "name": self.name,
            "min_score": self.min_score,
            "detect_size": self.detect_size,
        }

    def __getstate__(self) -> dict:  # thread-local models are not picklable: rebuild them lazily
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


