"""The detectors whose dependencies are optional extras: dlib's HOG detector with its 5-point
shape predictor (``fakeprobe[dlib]``) and MTCNN (``fakeprobe[mtcnn]``, TensorFlow). Both keep the
contract of :mod:`fakeprobe.extractor.detectors`; their heavy modules are imported only when one
is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakeprobe.core.checksums import read_verified
from fakeprobe.errors import WeightsError
from fakeprobe.errors import ConfigError
from fakeprobe.extractor.base import DETECTORS
from fakeprobe.extractor.detector_base import DEFAULT_DETECT_SIZE, _ShrinkingDetector
from fakeprobe.extractor.detector_base import bundled_file as _bundled_file

__all__ = ["DLIB_SHAPE_SHA256", "DlibHogDetector", "MTCNN_SHA256", "MtcnnDetector",
           "dlib_five_to_landmarks"]


# --------------------------------------------------------------------------------------------- #
# dlib HOG + 5-point shape predictor
# --------------------------------------------------------------------------------------------- #
DLIB_SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
#: SHA-256 of dlib's 5-point shape predictor as shipped in face-recognition-models 0.3.0.
DLIB_SHAPE_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"

#: Mouth-corner estimate for dlib's 5 points, which hold no mouth: with ``mid`` the midpoint of
#: the eye centres, ``down = nose - mid`` and ``across = right eye - left eye`` (image left and
#: right), the corners are ``mid + A * down -/+ B * across``. A and B were fitted by least squares
#: to YuNet's mouth corners on the 91 FFHQ photos (of 100) where both detectors found one face;
#: the median error is 0.08 of the eye distance (expressions move the mouth more than that). Only
#: alignment uses these points.
DLIB_MOUTH_DOWN = 1.30
DLIB_MOUTH_ACROSS = 0.43


def dlib_five_to_landmarks(points: np.ndarray) -> np.ndarray:
    """dlib's 5 points -> the 5-point order of ``base.py`` (mouth corners estimated).

    dlib's ``shape_predictor_5_face_landmarks``: parts 0, 1 are the outer and inner corners of the
    eye on the image's right, parts 2, 3 those of the eye on the image's left, part 4 the base of
    the nose (below the nose tip that YuNet and MTCNN give, by about 0.2 eye distances).
    """
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eye_right = (points[0] + points[1]) / 2.0
    eye_left = (points[2] + points[3]) / 2.0
    nose = points[4]
    mid = (eye_left + eye_right) / 2.0
    down = nose - mid
    across = eye_right - eye_left
    mouth_left = mid + DLIB_MOUTH_DOWN * down - DLIB_MOUTH_ACROSS * across
    mouth_right = mid + DLIB_MOUTH_DOWN * down + DLIB_MOUTH_ACROSS * across
    return np.stack([eye_left, eye_right, nose, mouth_left, mouth_right]).astype(np.float32)


@DETECTORS.register(
    "dlib-hog",
    requires=("dlib", "face_recognition_models"),
    hint='pip install "fakeprobe[dlib]"',
    description="dlib HOG + 5-point landmarks (CPU): frontal faces only",
)
class DlibHogDetector(_ShrinkingDetector):
    """``dlib.get_frontal_face_detector()`` with dlib's 5-point shape predictor.

    ``min_score`` (default 0.0, dlib's own ``adjust_threshold``) is the HOG-SVM score, which has
    no fixed range (about 0 to 3). ``upsample`` (default 1) enlarges the copy that many times
    before the search: HOG finds faces of about 80 pixels and up, 40 with one upsample, and with
    ``detect_size=640`` a 1080p frame is shrunk 3 times. Runs on the CPU whatever ``device`` says.
    Only the 5-point model is used: the 68-point one is not licensed for commercial use.
    """

    name = "dlib-hog"
    default_min_score = 0.0

    def __init__(
        self,
        device: str = "auto",
        weights: str | Path | None = None,
        min_score: float | None = None,
        detect_size: int = DEFAULT_DETECT_SIZE,
        upsample: int = 1,
        **_: Any,
    ) -> None:
        super().__init__(device, weights, min_score, detect_size)
        if int(upsample) < 0:
            raise ConfigError("upsample must be 0 or more")
        self.upsample = int(upsample)
        path = self.weights or _bundled_file(
            "face_recognition_models",
            f"models/{DLIB_SHAPE_FILE}",
            "dlib 5-point landmark",
            'pip install "fakeprobe[dlib]"',
        )
        self.model_path = path
        read_verified(path, DLIB_SHAPE_SHA256, "dlib 5-point landmark")

    def _new_model(self) -> Any:
        import dlib

        try:
            predictor = dlib.shape_predictor(str(self.model_path))
        except RuntimeError as exc:
            raise WeightsError(f"dlib cannot load {self.model_path}: {exc}") from exc
        return dlib.get_frontal_face_detector(), predictor

    def _detect_small(self, model: Any, small_bgr: np.ndarray):
        detector, predictor = model
        rgb = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2RGB)
        rects, scores, _ = detector.run(rgb, self.upsample, self.min_score)
        boxes, landmarks = [], []
        for rect in rects:
            shape = predictor(rgb, rect)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
            landmarks.append(dlib_five_to_landmarks(points))
            boxes.append((rect.left(), rect.top(), rect.width(), rect.height()))
        if not boxes:
            return np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0)
        return np.array(boxes, np.float64), np.stack(landmarks), np.asarray(scores, np.float64)

    def config(self) -> dict:
        return {
            **super().config(),
            "upsample": self.upsample,
            "landmark_model": DLIB_SHAPE_FILE,
            "model_sha256": DLIB_SHAPE_SHA256,
            "mouth_estimate": [DLIB_MOUTH_DOWN, DLIB_MOUTH_ACROSS],
        }


# --------------------------------------------------------------------------------------------- #
# MTCNN (ipazc/mtcnn 1.0.0, TensorFlow)
# --------------------------------------------------------------------------------------------- #
#: SHA-256 of the three networks shipped in mtcnn 1.0.0 (``mtcnn/assets/weights``). They are
#: joblib pickles, which run code when loaded: the checksum is checked before each load.
MTCNN_SHA256 = {
    "pnet.lz4": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet.lz4": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet.lz4": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}


@DETECTORS.register(
    "mtcnn",
    requires=("mtcnn", "tensorflow", "lz4"),
    hint='pip install "fakeprobe[mtcnn]"',
    description="MTCNN (TensorFlow, GPU when present): slower, robust to pose",
)
class MtcnnDetector(_ShrinkingDetector):
    """The ``mtcnn`` package (ipazc, 1.0.0): PNet, RNet and ONet cascade in TensorFlow.

    ``min_score`` (default 0.8, the package's ONet threshold) is the final ONet probability.
    ``min_face_size`` (default 20, the package's) is in pixels of the shrunk copy. Runs on the GPU
    when TensorFlow sees one and ``device`` is ``auto`` or ``gpu``. ``weights`` is a folder with
    ``pnet.lz4``, ``rnet.lz4`` and ``onet.lz4`` (checked against the pinned digests).
    """

    name = "mtcnn"
    default_min_score = 0.8

    def __init__(
        self,
        device: str = "auto",
        weights: str | Path | None = None,
        min_score: float | None = None,
        detect_size: int = DEFAULT_DETECT_SIZE,
        min_face_size: int = 20,
        **_: Any,
    ) -> None:
        super().__init__(device, weights, min_score, detect_size)
        if int(min_face_size) < 12:
            raise ConfigError("min_face_size must be at least 12 pixels (PNet's window)")
        self.min_face_size = int(min_face_size)
        folder = self.weights or _bundled_file(
            "mtcnn", "assets/weights", "MTCNN", 'pip install "fakeprobe[mtcnn]"'
        )
        self.weights_dir = folder
        for file, digest in MTCNN_SHA256.items():
            read_verified(folder / file, digest, f"MTCNN {file}")
        from fakeprobe.core.tf import resolve_device

        self.tf_device = resolve_device(self.device)

    def _new_model(self) -> Any:
        from fakeprobe.core.tf import import_tensorflow

        tf = import_tensorflow()
        from mtcnn import MTCNN
        from mtcnn.stages import StageONet, StagePNet, StageRNet

        files = {}
        for file, digest in MTCNN_SHA256.items():  # checked again: these files are pickles
            path = (self.weights_dir / file).resolve()
            read_verified(path, digest, f"MTCNN {file}")
            files[file] = str(path)  # an absolute path: mtcnn would look in the cwd first
        with tf.device(self.tf_device):
            stages = [
                StagePNet(weights=files["pnet.lz4"]),
                StageRNet(weights=files["rnet.lz4"]),
                StageONet(weights=files["onet.lz4"]),
            ]
            return MTCNN(stages=stages, device=self.tf_device)

    def _detect_small(self, model: Any, small_bgr: np.ndarray):
        if min(small_bgr.shape[:2]) < self.min_face_size:
            return np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0)
        rgb = np.ascontiguousarray(cv2.cvtColor(small_bgr, cv2.COLOR_BGR2RGB))
        raw = model.detect_faces(
            rgb,
            box_format="xyxy",
            output_type="numpy",
            min_face_size=self.min_face_size,
            threshold_onet=self.min_score,
        )
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, 16)
        if len(raw) == 0:
            return np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0)
        # Columns: image id, x1, y1, x2, y2, score, then the five x and the five y of
        # left_eye, right_eye, nose, mouth_left, mouth_right, named by their side in the image:
        # already the order of base.py.
        boxes = np.stack([raw[:, 1], raw[:, 2], raw[:, 3] - raw[:, 1], raw[:, 4] - raw[:, 2]], 1)
        landmarks = np.stack([raw[:, 6:11], raw[:, 11:16]], axis=2)
        return boxes, landmarks, raw[:, 5]

    def config(self) -> dict:
        return {
            **super().config(),
            "min_face_size": self.min_face_size,
            "model_sha256": dict(MTCNN_SHA256),
        }
