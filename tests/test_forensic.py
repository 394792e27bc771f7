"""The shipped forensic encoder, the bundled detector, face-crop mode and the training recipe.

The shipped files are checked as a user gets them (offline, from the installed package, against
their pinned SHA-256); a tampered copy must be refused, and ``predict`` with no model must score
the offline sample. The recipe (``benchmarks/forensic_encoder.py``) runs end to end on a tiny
synthetic face-crop set, with the same code that trained the shipped encoder.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fakeprobe.cli import app
from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.config import CONTEXT_MARGIN, ExtractorConfig
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.components import BACKBONES
from fakeprobe.features.cache import CacheReader
from fakeprobe.training.finetune import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def forensic():
    """The shipped encoder, loaded as ``extract -b forensic`` loads it."""
    return BACKBONES.create("forensic", device="cpu", batch_size=8)


def test_shipped_weights_load_offline_and_match_their_checksum(forensic):
    from fakeprobe.weights import pinned_sha256, weights_dir

    from fakeprobe.extractor.backbones.forensic import WEIGHTS_FILE

    path = weights_dir() / WEIGHTS_FILE
    assert path.stat().st_size < 20e6, "the shipped weights must stay small"
    assert sha256_file(path) == pinned_sha256(WEIGHTS_FILE)
    assert forensic.config()["weights_sha256"] == pinned_sha256(WEIGHTS_FILE)
    assert forensic.dim == 128 and forensic.crop.margin == CONTEXT_MARGIN
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, forensic.crop.size, forensic.crop.size, 3), np.uint8)
    vectors = forensic.embed(crops)
    assert vectors.shape == (5, 128) and np.isfinite(vectors).all()
    # different crops give different features (a dead network would not)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-4


def test_a_tampered_weights_file_is_refused(tmp_path, monkeypatch):
    import fakeprobe.weights as shipped
    from fakeprobe.extractor.backbones.forensic import WEIGHTS_FILE

    copy = tmp_path / "weights"
    shutil.copytree(shipped.weights_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "weights_dir", lambda: copy)
    with pytest.raises(WeightsError, match="SHA-256"):
        BACKBONES.create("forensic", device="cpu")
    # the same for the bundled detector
    model = copy / shipped.BUNDLED_MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match="SHA-256"):
        shipped.bundled_model_path()


def test_a_weights_file_naming_foreign_layers_is_refused(tmp_path):
    from fakeprobe.extractor.backbones.forensic import read_weights
    from fakeprobe.weights import weights_dir

    from fakeprobe.extractor.backbones.forensic import WEIGHTS_FILE

    with np.load(weights_dir() / WEIGHTS_FILE, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    text = bytes(arrays["architecture"]).decode().replace('"Dense"', '"Lambda"', 1)
    arrays["architecture"] = np.frombuffer(text.encode(), np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(WeightsError, match="Lambda"):
        read_weights(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a forensic weights file"):
        read_weights(tmp_path / "junk.npz")


def test_predict_without_a_model_scores_the_offline_sample(tmp_path):
    from fakeprobe.synth.sample import make_sample
    from fakeprobe.weights import BUNDLED_MODEL_NAME

    summary = make_sample(tmp_path / "s", clips_per_photo=1, holdout_per_photo=1, seconds=0.6)
    media = sorted(p for p in (tmp_path / "s").rglob("*.mp4"))[:2]
    assert media
    result = CliRunner().invoke(app, ["predict", *map(str, media), "--json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bundled"] is True and data["model_name"] == BUNDLED_MODEL_NAME
    assert 0.0 < data["threshold"] < 1.0
    scored = [p for p in data["predictions"] if p["score"] is not None]
    assert len(scored) == len(media) and summary.frames_with_face > 0
    for p in scored:
        assert 0.0 <= p["score"] <= 1.0 and p["label"] in ("real", "fake")
        assert p["frames_used"] > 0 and len(p["timeline"]) == p["frames_used"]
    # the table names the bundled model and its threshold
    table = CliRunner().invoke(app, ["predict", str(media[0]), "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert "forensic-detector-v1" in table.output and "threshold" in table.output


# --- face-crop mode --------------------------------------------------------------------------

def _write_crops(root: Path) -> Path:
    """A manifest of one blank "crop" (no face to detect) and one with a face (a portrait
    photo that ships with matplotlib), both labelled."""
    from fakeprobe.synth.sample import find_photos

    root.mkdir(parents=True)
    cv2.imwrite(str(root / "blank.png"), np.full((150, 120, 3), 128, np.uint8))
    photo = cv2.imread(str(find_photos()[0][1]))
    cv2.imwrite(str(root / "photo.png"), photo)
    (root / "m.csv").write_text("path,label,group\nblank.png,real,a\nphoto.png,fake,b\n")
    return root / "m.csv"


def test_face_crop_mode_keeps_every_image_as_one_face(tmp_path):
    from fakeprobe.core.geometry import ARCFACE_TEMPLATE_112
    from fakeprobe.pipeline.run import extract

    manifest = _write_crops(tmp_path / "in")
    plain = ExtractorConfig(frames=1, backbones=("spectrum",))
    extract([manifest], tmp_path / "plain.h5", plain)
    extract([manifest], tmp_path / "crops.h5",
            ExtractorConfig(frames=1, backbones=("spectrum",), face_crops=True))
    with CacheReader(tmp_path / "plain.h5") as cache:
        status = dict(zip(cache.videos()["id"], cache.videos()["status"]))
        plain_marks = cache.frames()["landmarks"]
    assert status["in/blank.png"] == "no_face" and status["in/photo.png"] == "ok"
    with CacheReader(tmp_path / "crops.h5") as cache:
        assert cache.config.face_crops is True
        videos, frames = cache.videos(), cache.frames()
        assert list(videos["status"]) == ["ok", "ok"] and frames["has_face"].all()
        blank = list(videos["id"]).index("in/blank.png")
        marks = frames["landmarks"][frames["video"] == blank][0]
        # the 120x150 blank is taken as a tight face box: the template on its 120 px side,
        # centred vertically
        expected = ARCFACE_TEMPLATE_112 / 112 * 120 + np.array([0.0, 15.0])
        np.testing.assert_allclose(marks, expected, atol=1e-3)
        assert math.isnan(frames["score"][frames["video"] == blank][0])
        photo = list(videos["id"]).index("in/photo.png")
        # a detected face keeps the detector's landmarks, as without the option
        np.testing.assert_allclose(frames["landmarks"][frames["video"] == photo][0],
                                   plain_marks[~np.isnan(plain_marks[:, 0, 0])][0], atol=1e-4)
    # a cache made without the option refuses a run with it (it changes the rows)
    result = CliRunner().invoke(app, ["extract", str(manifest), "--out",
                                      str(tmp_path / "plain.h5"), "--face-crops"])
    assert result.exit_code == 1 and "face_crops" in result.output


# --- the recipe ------------------------------------------------------------------------------

def test_cosine_schedule_warms_up_then_decays():
    config = FinetuneConfig(lr=1e-3, epochs=10, schedule="cosine", warmup=1.0)
    rates = [config.learning_rate(t) for t in np.linspace(0, 10, 101)]
    assert rates[0] == pytest.approx(1e-4) and rates[10] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-5)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11]))  # warm-up rises
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then only falls
    assert FinetuneConfig(lr=1e-3).learning_rate(5.0) == 1e-3  # constant by default
    with pytest.raises(Exception, match="schedule"):
        FinetuneConfig(schedule="step")


def test_the_recipe_runs_end_to_end_on_a_tiny_set(tmp_path):
    """The training command itself, shrunk: synthetic face crops of 10 groups (face-crop
    mode: no detector needed), a few synthetic videos for the cross-dataset stage, one epoch at
    64 px; then the export writes weights that load as the ``forensic`` backbone."""
    from conftest import write_video

    rng = np.random.default_rng(0)
    faces = tmp_path / "faces"
    faces.mkdir()
    lines = ["path,label,group,dataset,method"]
    for g in range(10):
        for k, label in enumerate(("real", "fake", "fake")):
            image = rng.integers(0, 255, (96, 96, 3), np.uint8)
            if label == "fake":
                image[30:60, 30:60] = cv2.GaussianBlur(image[30:60, 30:60], (7, 7), 3)
            cv2.imwrite(str(faces / f"{g}_{k}.png"), image)
            lines.append(f"{g}_{k}.png,{label},actor{g},tiny faces,"
                         f"{'original' if label == 'real' else 'swap'}")
    (faces / "manifest.csv").write_text("\n".join(lines) + "\n")
    videos = tmp_path / "videos"
    for label in ("real", "fake"):
        (videos / label).mkdir(parents=True)
        for k in range(2):
            write_video(videos / label / f"{k}.mp4", n_frames=6, seed=k + (label == "fake"))
    work = tmp_path / "work"
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script and its _output helper
    try:
        import forensic_encoder

        code = forensic_encoder.main([
            "--workdir", str(work), "--faces", str(faces / "manifest.csv"),
            "--videos", str(videos), "--detector", "test-blob", "--epochs", "1",
            "--input-size", "64", "--base", "mobilenet-v2", "--frozen", "spectrum",
            "--export", "--weights-dir", str(tmp_path / "shipped")])
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert code == 0
    results = json.loads((work / "results.json").read_text())
    split = json.loads((work / "split.json").read_text())
    assert len(split["holdout"]) == 2 and not set(split["holdout"]) & set(split["train"])
    for name in ("finetuned", "spectrum"):
        numbers = results["scores"][name]
        assert numbers["test_groups"] == 2 and 0.0 <= numbers["holdout_auc"] <= 1.0
        assert "ffpp_head_auc" in numbers or "videos_head_auc" in numbers
    shipped = results["shipped"]
    weights = tmp_path / "shipped" / "forensic-v1.npz"
    assert sha256_file(weights) == shipped["weights_sha256"]
    sums = (tmp_path / "shipped" / "SHA256SUMS").read_text()
    assert f"{shipped['weights_sha256']}  forensic-v1.npz" in sums
    backbone = BACKBONES.create("forensic", device="cpu", weights=str(weights))
    assert backbone.crop.size == 64
    # float16 weights: the same features as the float32 network, to float16 precision
    finetuned = BACKBONES.create("finetuned", device="cpu", weights=str(work / "forensic.keras"))
    crops = rng.integers(0, 256, (4, 64, 64, 3), np.uint8)
    a, b = backbone.embed(crops), finetuned.embed(crops)
    assert np.abs(a - b).max() <= 2e-2 * max(1.0, np.abs(b).max())


def test_components_names_the_bundled_detector_and_forensic_is_the_default():
    from fakeprobe.core.config import DEFAULT_BACKBONE, ExtractorConfig

    result = CliRunner().invoke(app, ["components", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "forensic" in {b["name"] for b in data["backbone"]}
    bundled = data["bundled_model"]
    assert bundled["features"] == ["forensic"] and bundled["head"] == "logreg"
    assert 0.0 < bundled["threshold"] < 1.0 and Path(bundled["card"]).is_file()
    assert DEFAULT_BACKBONE == "forensic" and ExtractorConfig().backbones == ("forensic",)


def test_predict_with_only_a_model_file_says_what_is_missing():
    from fakeprobe.weights import bundled_model_path

    result = CliRunner().invoke(app, ["predict", str(bundled_model_path())])
    assert result.exit_code == 1
    assert "is a model file" in result.output and "Traceback" not in result.output
