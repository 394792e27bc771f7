"""Shared fixtures: the development data, synthetic media, and tiny stub components.

The stubs (a bright-blob "face" detector and a colour-statistics "backbone") make pipeline tests
run in milliseconds and know their answers; the real detectors and networks have their own tests.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import cv2
import numpy as np
import pytest

from fakeprobe.core.geometry import CropSpec
from fakeprobe.extractor.base import Detector, Face
from fakeprobe.extractor.components import BACKBONES, DETECTORS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def skip_unless_ci(message: str, must: str) -> NoReturn:
    """Skip the test, but fail it under ``CI=true``: CI provides ``must``, so a skip there
    would hide a broken setup."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: {must})")
    pytest.skip(message)


def require_shared_data() -> Path:
    """``../shared/data``; skips when absent, but fails under ``CI=true`` (CI must have it)."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        skip_unless_ci(f"development data not found at {SHARED_DATA}", "it must be there")
    return SHARED_DATA


def require_core(component: str, missing: list[str]) -> None:
    """Skip a test whose core dependency (TensorFlow, Keras: ``pyproject.toml``'s
    ``dependencies``) is ``missing`` for ``component``; under ``CI=true`` fail instead."""
    if missing:
        skip_unless_ci(f"{component}: {', '.join(missing)} not installed",
                       "core dependencies must be installed")


def import_core(module: str) -> ModuleType:
    """``module``, a core dependency, imported; see :func:`require_core` when it is not."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require_core(module, [f"{module} ({exc})"])
        raise


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real labelled data of ``../shared/data`` (FF++, DFDC, StyleGAN2/FFHQ)."""
    return require_shared_data()


#: Six FF++ c40 clips of ``../shared/data`` (three source groups, a real and a fake each): the
#: small real set of the tests that read the shared data.
FFPP_C40 = [
    "ffpp/original_sequences/youtube/c40/videos/183.mp4",
    "ffpp/manipulated_sequences/Deepfakes/c40/videos/183_253.mp4",
    "ffpp/original_sequences/youtube/c40/videos/469.mp4",
    "ffpp/manipulated_sequences/FaceSwap/c40/videos/469_481.mp4",
    "ffpp/original_sequences/youtube/c40/videos/866.mp4",
    "ffpp/manipulated_sequences/Face2Face/c40/videos/866_878.mp4",
]


def write_ffpp_manifest(path: Path, rels: list[str], root: Path) -> Path:
    """A ``path,label,group`` CSV of FF++ files ``rels`` under ``root``: fake when under
    ``manipulated``, grouped by source id (the number before any ``_``)."""
    lines = ["path,label,group"]
    for rel in rels:
        label = "fake" if "manipulated" in rel else "real"
        lines.append(f"{root / rel},{label},{Path(rel).stem.split('_')[0]}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- stub components -------------------------------------------------------------------------

class BlobDetector(Detector):
    """Finds bright (>200) blobs; each is a "face" with landmarks placed inside its box."""

    name = "test-blob"

    def __init__(self, min_area: int = 20, **_: object) -> None:
        self.min_area = min_area

    def detect(self, frame: np.ndarray) -> list[Face]:
        mask = (frame.max(axis=2) > 200).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        faces = []
        for x, y, w, h, area in stats[1:count]:
            if area < self.min_area:
                continue
            marks = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
            marks = (marks * [w, h] + [x, y]).astype(np.float32)
            faces.append(Face((float(x), float(y), float(w), float(h)), marks, 1.0))
        return faces


class ColourStats:
    """A 6-d "backbone": per-channel mean and standard deviation of the crop."""

    name = "test-colour"
    dim = 6
    crop = CropSpec(32, 0.3)

    def __init__(self, **_: object) -> None:
        self.calls = 0

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = crops.astype(np.float32) / 255.0
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)

    def config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "crop_size": 32, "crop_margin": 0.3}


class MeanGrey(ColourStats):
    """A second 1-d stub backbone, to test adding a feature set to a cache."""

    name = "test-grey"
    dim = 1
    crop = CropSpec(16, 0.0)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return crops.astype(np.float32).mean(axis=(1, 2, 3))[:, None] / 255.0

    def config(self) -> dict:
        return {"name": self.name, "dim": 1, "crop_size": 16, "crop_margin": 0.0}


if "test-blob" not in DETECTORS.names():
    DETECTORS.register("test-blob", description="test stub")(BlobDetector)
    BACKBONES.register("test-colour", description="test stub")(ColourStats)
    BACKBONES.register("test-grey", description="test stub")(MeanGrey)


@pytest.fixture()
def stub_config():
    """An extractor config using the stubs, 6 frames per video."""
    from fakeprobe.core.config import ExtractorConfig

    return ExtractorConfig(frames=6, detector="test-blob", backbones=("test-colour",))


# --- synthetic media -------------------------------------------------------------------------

def write_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (96, 72),
                blobs: int = 1, fps: float = 25.0, seed: int = 0) -> Path:
    """An mp4 of dark noise with ``blobs`` bright squares drifting right (0 = no face)."""
    rng = np.random.default_rng(seed)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for b in range(blobs):
            x, y = 5 + i + 40 * b, 10 + 30 * (b % 2)
            frame[y : y + 20, x : x + 16] = 255
        writer.write(frame)
    writer.release()
    return path


def write_image(path: Path, face: bool = True, size: tuple[int, int] = (80, 60)) -> Path:
    width, height = size
    image = np.full((height, width, 3), 30, np.uint8)
    if face:
        image[10:40, 20:44] = 250
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture()
def media_tree(tmp_path: Path) -> Path:
    """``data/real/*`` and ``data/fake/*``: two videos and one image per class."""
    root = tmp_path / "data"
    for label, seed in (("real", 0), ("fake", 1)):
        folder = root / label
        folder.mkdir(parents=True)
        write_video(folder / "a.mp4", seed=seed)
        write_video(folder / "b.mp4", seed=seed + 10)
        write_image(folder / "c.png")
    return root
