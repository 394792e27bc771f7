"""The shipped forensic encoder, the bundled detector, face-crop mode and the training recipe.

The shipped files are checked as a user gets them (offline, from the installed package, against
their pinned SHA-256); a tampered copy must be refused, and ``predict`` with no model must score
the offline sample. The recipe (``benchmarks/forensic_encoder.py``) runs end to end on a tiny
synthetic face-crop set, with the same code that trained the shipped encoder.
"""

from __future__ import annotations

import json
import math
import os
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


# --- the two runtimes ------------------------------------------------------------------------

def _features_within_tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference of features ``a`` from the reference ``b``, asserted within the
    tolerance the model card states (relative to the features' magnitude, at least 1)."""
    from fakeprobe.extractor.backbones.forensic import FEATURE_TOLERANCE

    assert a.shape == b.shape and np.isfinite(a).all()
    difference = float(np.abs(a - b).max())
    assert difference <= FEATURE_TOLERANCE * max(1.0, float(np.abs(b).max())), difference
    return difference


def test_the_shipped_encoder_runs_on_onnx_runtime_without_tensorflow():
    """A fresh process builds the default backbone and embeds crops: ONNX Runtime serves it,
    TensorFlow is never imported, and the converted copy is pinned and small."""
    import subprocess

    from fakeprobe.extractor.backbones.forensic import CONVERTED_FILE
    from fakeprobe.weights import pinned_sha256, weights_dir

    path = weights_dir() / CONVERTED_FILE
    assert path.stat().st_size < 20e6, "the shipped ONNX copy must stay small"
    assert sha256_file(path) == pinned_sha256(CONVERTED_FILE)
    code = ("import sys, numpy as np\n"
            "from fakeprobe.extractor.components import BACKBONES\n"
            "b = BACKBONES.create('forensic', device='auto')\n"
            "v = b.embed(np.zeros((2, b.crop.size, b.crop.size, 3), np.uint8))\n"
            "print(b.runtime, v.shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "FAKEPROBE_FORENSIC_RUNTIME"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnxruntime", "(2,", "128)", "False", "False"]


@pytest.mark.shared_data
def test_predict_of_one_video_imports_no_tensorflow(shared_data):
    """``fakeprobe predict VIDEO`` in a fresh process, as from the shell: the video is scored
    and neither TensorFlow, Keras, PyTorch nor XGBoost was imported on the way."""
    import subprocess

    video = (shared_data / "ffpp" / "original_sequences" / "youtube" / "c40" / "videos" /
             "253.mp4")
    code = ("import sys\n"
            "from fakeprobe.cli import main\n"
            f"sys.argv = ['fakeprobe', 'predict', {str(video)!r}, '--json']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "heavy = ('tensorflow', 'keras', 'torch', 'xgboost')\n"
            "print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items() if k != "FAKEPROBE_FORENSIC_RUNTIME"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *output, last = done.stdout.strip().splitlines()
    assert last == "HEAVY:", last
    (prediction,) = json.loads("\n".join(output))["predictions"]
    assert prediction["status"] == "ok" and 0.0 <= prediction["score"] <= 1.0


def test_both_runtimes_give_the_same_features_and_the_same_feature_set(forensic):
    from fakeprobe.extractor.backbones.forensic import synthetic_crops

    keras_net = BACKBONES.create("forensic", device="cpu", batch_size=8, runtime="keras")
    light = BACKBONES.create("forensic", device="cpu", batch_size=8, runtime="onnxruntime")
    assert (keras_net.runtime, light.runtime, forensic.runtime) == (
        "keras", "onnxruntime", "onnxruntime")
    # one feature set: a cache made by either is read as the same one
    assert keras_net.config() == light.config()
    crops = synthetic_crops(light.crop.size, 24, seed=3)
    _features_within_tolerance(light.embed(crops), keras_net.embed(crops))
    with pytest.raises(Exception, match="runtime"):
        BACKBONES.create("forensic", device="cpu", runtime="tflite")


def test_a_tampered_onnx_copy_is_refused(tmp_path, monkeypatch):
    import fakeprobe.weights as shipped
    from fakeprobe.extractor.backbones.forensic import CONVERTED_FILE

    copy = tmp_path / "weights"
    shutil.copytree(shipped.weights_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    data = bytearray((copy / CONVERTED_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / CONVERTED_FILE).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "weights_dir", lambda: copy)
    with pytest.raises(WeightsError, match="SHA-256"):
        BACKBONES.create("forensic", device="cpu")
    # forcing Keras does not read the copy at all
    assert BACKBONES.create("forensic", device="cpu", runtime="keras").runtime == "keras"


def test_a_converted_copy_of_other_weights_is_never_used(tmp_path):
    """A weights file of one's own runs on the ONNX copy beside it only when that copy was
    converted from this very file; after the file changes, Keras serves (auto) or the runtime
    asked for refuses."""
    from fakeprobe.extractor.backbones.forensic import CONVERTED_FILE, WEIGHTS_FILE, converted_path
    from fakeprobe.weights import weights_dir

    weights = tmp_path / "mine.npz"
    shutil.copyfile(weights_dir() / WEIGHTS_FILE, weights)
    shutil.copyfile(weights_dir() / CONVERTED_FILE, converted_path(weights))
    own = BACKBONES.create("forensic", device="cpu", weights=str(weights))
    assert own.runtime == "onnxruntime" and own.config()["weights"] == "mine.npz"
    with np.load(weights, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays["metadata"]).decode())
    arrays["metadata"] = np.frombuffer(json.dumps({**meta, "note": "re-saved"}).encode(),
                                       np.uint8)
    np.savez_compressed(weights, **arrays)  # other bytes, other SHA-256
    with pytest.warns(UserWarning, match="converted from weights"):
        fallback = BACKBONES.create("forensic", device="cpu", weights=str(weights))
    assert fallback.runtime == "keras"
    assert fallback.config()["weights_sha256"] == sha256_file(weights)
    with pytest.raises(WeightsError, match="converted from weights"):
        BACKBONES.create("forensic", device="cpu", weights=str(weights), runtime="onnxruntime")


def _tiny_weights(path: Path, size: int = 32) -> Path:
    """A forensic weights file of a tiny network (the layers fakeprobe builds), written in the
    format :func:`export` writes."""
    import keras

    from fakeprobe.extractor.backbones.forensic import FORENSIC_FORMAT

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="rgb")
    x = keras.layers.Normalization(mean=[127.0] * 3, variance=[128.0 ** 2] * 3)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, activation="relu", name="embedding")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    weights = model.get_weights()
    metadata = {"format": FORENSIC_FORMAT, "weights": len(weights), "base": "tiny",
                "input_size": size, "crop_margin": CONTEXT_MARGIN, "embedding_layer": "embedding",
                "embedding_dim": 6, "dtype": "float16"}
    arrays = {f"w{k:04d}": np.asarray(w, np.float16) for k, w in enumerate(weights)}
    arrays["architecture"] = np.frombuffer(model.to_json().encode(), np.uint8)
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def test_convert_writes_a_copy_that_agrees_and_refuses_one_that_does_not(tmp_path, monkeypatch):
    from fakeprobe.extractor.backbones import onnx_runtime
    from fakeprobe.extractor.backbones.forensic import (
        FEATURE_TOLERANCE, convert_weights, converted_path, synthetic_crops)

    weights = _tiny_weights(tmp_path / "tiny.npz")
    described = convert_weights(weights)
    copy = converted_path(weights)
    assert copy.is_file() and described["source_sha256"] == sha256_file(weights)
    measured = described["agreement"]
    assert measured["within"] and measured["check_crops"] == "synthetic"
    assert measured["max_abs_difference"] <= FEATURE_TOLERANCE * max(1, measured["feature_scale"])
    light = BACKBONES.create("forensic", device="cpu", weights=str(weights))
    heavy = BACKBONES.create("forensic", device="cpu", weights=str(weights), runtime="keras")
    assert (light.runtime, heavy.runtime) == ("onnxruntime", "keras")
    assert light.config() == heavy.config() and light.dim == 6
    crops = synthetic_crops(32, 10, seed=5)
    _features_within_tolerance(light.embed(crops), heavy.embed(crops))
    # the float16 weights are stored as float16 inside the graph (cast back to float32 there)
    import onnx

    stored = {onnx.TensorProto.DataType.Name(t.data_type) for t in onnx.load(copy).graph.initializer
              if np.prod(t.dims) >= onnx_runtime.MIN_FLOAT16_SIZE}
    assert stored == {"FLOAT16"}
    # a conversion whose features drift beyond the tolerance is not written
    copy.unlink()
    embed = onnx_runtime.OnnxNetwork.embed
    monkeypatch.setattr(onnx_runtime.OnnxNetwork, "embed",
                        lambda self, c: embed(self, c) + 0.01)
    with pytest.raises(WeightsError, match="not written"):
        convert_weights(weights)
    assert not copy.exists()


@pytest.mark.shared_data
@pytest.mark.slow
def test_bundled_detector_scores_ffpp_c40_alike_on_both_runtimes(shared_data, tmp_path,
                                                                  monkeypatch):
    """``predict`` of FF++ c40 videos with the bundled detector, once per runtime: the caches
    hold one feature set (either one is accepted by the model), their features agree within the
    card's tolerance on these real face crops, and no frame or video score moves by 1e-3."""
    from fakeprobe.classifiers.model import load_model
    from fakeprobe.weights import bundled_model_path

    videos = [shared_data / "ffpp" / "original_sequences" / "youtube" / "c40" / "videos" /
              "253.mp4",
              shared_data / "ffpp" / "manipulated_sequences" / "Deepfakes" / "c40" / "videos" /
              "253_183.mp4",
              shared_data / "ffpp" / "manipulated_sequences" / "NeuralTextures" / "c40" /
              "videos" / "481_469.mp4"]
    runs = {}
    for runtime in ("keras", "onnxruntime"):
        monkeypatch.setenv("FAKEPROBE_FORENSIC_RUNTIME", runtime)
        cache = tmp_path / f"{runtime}.h5"
        result = CliRunner().invoke(app, ["predict", *map(str, videos), "--json", "--device",
                                          "cpu", "--cache", str(cache)])
        assert result.exit_code == 0, result.output
        runs[runtime] = (json.loads(result.stdout)["predictions"], cache)
    model = load_model(bundled_model_path())
    configs, features = {}, {}
    for runtime, (_, cache) in runs.items():
        model.check_cache(cache)  # the bundled detector accepts a cache of either runtime
        with CacheReader(cache) as reader:
            configs[runtime] = reader.feature_sets["forensic"]
            ids, frames = reader.videos()["id"], reader.frames(("video", "frame_index", "track"))
            keys = zip(ids[frames["video"]], frames["frame_index"], frames["track"])
            # rows are in the order items finished: matched by (video, frame, track)
            features[runtime] = dict(zip(keys, reader.features("forensic")))
    assert configs["keras"] == configs["onnxruntime"]
    assert features["keras"].keys() == features["onnxruntime"].keys()
    keys = [k for k, v in features["keras"].items() if not np.isnan(v[0])]
    assert len(keys) >= 60  # real faces on most of the 3 x 32 frames
    _features_within_tolerance(np.stack([features["onnxruntime"][k] for k in keys]),
                               np.stack([features["keras"][k] for k in keys]))
    keras_runs = {p["id"]: p for p in runs["keras"][0]}
    light_runs = {p["id"]: p for p in runs["onnxruntime"][0]}
    assert keras_runs.keys() == light_runs.keys() and len(keras_runs) == 3
    for vid, a in keras_runs.items():
        b = light_runs[vid]
        assert a["status"] == b["status"] == "ok"
        assert abs(a["score"] - b["score"]) <= 1e-3 and a["frames_used"] == b["frames_used"]
        for x, y in zip(a["timeline"], b["timeline"]):
            assert x["frame"] == y["frame"] and abs(x["score"] - y["score"]) <= 1e-3


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
    assert "forensic-detector-v2" in table.output and "threshold" in table.output


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
    weights = tmp_path / "shipped" / "forensic-v2.npz"
    assert sha256_file(weights) == shipped["weights_sha256"]
    sums = (tmp_path / "shipped" / "SHA256SUMS").read_text()
    assert f"{shipped['weights_sha256']}  forensic-v2.npz" in sums
    # the ONNX copy: written beside the weights, pinned, checked on the cached crops, used
    onnx_copy = tmp_path / "shipped" / "forensic-v2.onnx"
    assert f"{sha256_file(onnx_copy)}  forensic-v2.onnx" in sums
    converted = shipped["converted"]
    assert converted["source_sha256"] == shipped["weights_sha256"]
    assert converted["agreement"]["within"] and converted["agreement"]["check_crops"] == "given"
    assert converted["agreement"]["crops"] > 0
    backbone = BACKBONES.create("forensic", device="cpu", weights=str(weights))
    assert backbone.crop.size == 64 and backbone.runtime == "onnxruntime"
    on_keras = BACKBONES.create("forensic", device="cpu", weights=str(weights), runtime="keras")
    assert on_keras.config() == backbone.config()
    probe = rng.integers(0, 256, (6, 64, 64, 3), np.uint8)
    _features_within_tolerance(backbone.embed(probe), on_keras.embed(probe))
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
