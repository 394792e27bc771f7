"""Explanations: occlusion maps on synthetic scorers, then explain_video, the figures and the
`explain` command through real (tiny) models on a cache extracted with the stub components."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.model import load_model
from fakeprobe.cli import app
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.geometry import CropSpec, template_for
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.evaluation import explain as ex
from fakeprobe.evaluation.occlusion import _positions
from fakeprobe.evaluation.runs import finite
from fakeprobe.features.cache import CacheReader
from fakeprobe.pipeline.run import extract

runner = CliRunner()
SQUARE = (slice(36, 50), slice(10, 24))  # where the synthetic "fake evidence" lies


def _textured_crop(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    crop = rng.integers(60, 140, (size, size, 3), dtype=np.uint8)
    crop[SQUARE] = (230, 40, 40)  # a red square
    return crop


def _redness_in_square(crops: np.ndarray) -> np.ndarray:
    """P(fake) = how red the known square is (0..1): the evidence lies there and only there."""
    x = crops[:, SQUARE[0], SQUARE[1]].astype(float) / 255
    return np.clip(x[..., 0] - (x[..., 1] + x[..., 2]) / 2, 0, 1).mean(axis=(1, 2))


@pytest.mark.parametrize("fill", ["blur", "grey"])
@pytest.mark.parametrize("space", ["proba", "logit"])
def test_the_heatmap_peaks_on_the_region_that_carries_the_evidence(fill, space):
    crop = _textured_crop()
    calls = []

    def score(crops):
        calls.append(len(crops))
        return _redness_in_square(crops)

    heat = ex.occlusion_map(crop, score, patch=12, stride=6, fill=fill, space=space)
    assert heat.shape == crop.shape[:2] and heat.dtype == np.float32
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert SQUARE[0].start <= y < SQUARE[0].stop and SQUARE[1].start <= x < SQUARE[1].stop
    inside = np.zeros(heat.shape, bool)
    inside[SQUARE] = True
    assert heat[inside].mean() > 5 * max(heat[~inside].mean(), 1e-9)
    # every occluded copy and the baseline in ONE call: 10 x 10 patch positions + 1
    assert calls == [len(_positions(64, 12, 6)) ** 2 + 1] == [101]


def test_a_constant_scorer_gives_a_zero_map_of_the_crop_shape():
    crop = _textured_crop(48)
    heat = ex.occlusion_map(crop, lambda c: np.full(len(c), 0.7))
    assert heat.shape == (48, 48)
    assert np.abs(heat).max() < 1e-6
    heat, baseline = ex.occlusion_maps(crop, lambda c: np.full(len(c), 0.7), space="logit")
    assert np.abs(heat).max() < 1e-6 and baseline == pytest.approx(0.7)


def test_defaults_cover_every_pixel_and_are_named():
    patch, stride = ex.default_patch(224)
    assert (patch, stride) == (round(ex.PATCH_FRACTION * 224), round(ex.STRIDE_FRACTION * patch))
    positions = _positions(224, patch, stride)
    assert positions[0] == 0 and positions[-1] == 224 - patch  # flush with the far edge


def test_the_blur_fill_adds_no_edge_where_the_grey_square_does():
    flat = np.full((40, 40, 3), 200, np.uint8)

    def edge_energy(crops):  # a "texture detector": mean gradient magnitude
        x = crops.astype(float).mean(axis=3)
        return np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) / 255

    blur = ex.occlusion_map(flat, edge_energy, fill="blur")
    grey = ex.occlusion_map(flat, edge_energy, fill="grey")
    assert np.abs(blur).max() < 1e-9
    assert grey.min() < -1e-3  # the grey square's edges made it look "more fake"


def test_bad_crops_and_options_are_refused():
    with pytest.raises(ValueError, match="square"):
        ex.occlusion_map(np.zeros((10, 12, 3), np.uint8), lambda c: np.zeros(len(c)))
    with pytest.raises(ValueError, match="fill"):
        ex.occlusion_map(np.zeros((10, 10, 3), np.uint8), lambda c: np.zeros(len(c)),
                         fill="pink")
    with pytest.raises(ValueError, match="scores for"):
        ex.occlusion_map(np.zeros((10, 10, 3), np.uint8), lambda c: np.zeros(2))


def test_regions_are_named_from_the_template():
    spec = CropSpec(112, 0.1)
    left_eye, right_eye, nose, mouth_l, mouth_r = template_for(spec)
    ys, xs = np.mgrid[0:112, 0:112] + 0.5

    def bump(point, sigma=3.0):
        return np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma**2))

    assert ex.hottest_regions(bump((mouth_l + mouth_r) / 2), spec)[0]["region"] == "mouth"
    assert ex.hottest_regions(bump(left_eye), spec)[0]["region"] == "left eye"
    assert ex.hottest_regions(bump(right_eye), spec)[0]["region"] == "right eye"
    assert ex.hottest_regions(bump(nose), spec)[0]["region"] == "nose"
    labels = ex.face_regions(spec)
    assert ex.REGIONS[labels[int(left_eye[1]), int(left_eye[0])]] == "left eye"
    assert ex.REGIONS[labels[1, 1]] == "background"
    assert "jaw line/boundary" in {ex.REGIONS[v] for v in np.unique(labels)}
    assert ex.hottest_regions(-bump(nose), spec) == []  # nothing raised the score


def test_the_covering_geometry_serves_every_backbone():
    assert ex.covering_spec([CropSpec(224, 0.1), CropSpec(112, 0.0)]) == CropSpec(224, 0.1)
    assert ex.covering_spec([CropSpec(256, 0.0)]) == CropSpec(308, 0.1)
    assert ex.covering_spec([CropSpec(32, 0.3)]) == CropSpec(32, 0.3)


# --- through real models -----------------------------------------------------------------------

def _video(path: Path, colour: tuple[int, int, int], seed: int, n_frames: int = 10) -> None:
    """Dark noise with a bright blob ("face", found by the stub detector) drifting right; the
    fakes' blobs are tinted, which the colour backbone sees."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 72))
    for i in range(n_frames):
        frame = rng.integers(0, 60, (72, 96, 3), dtype=np.uint8)
        frame[10:40, 20 + i:44 + i] = colour
        frame[30:36, 26 + i:38 + i] = 255
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A cache of 4 videos and 1 image per class (stub detector, stub backbones test-colour and
    test-grey, crops kept at 64 px) and three logistic models on it: test-grey (its 16 px crop
    is cut from the cached crops), test-colour (its 0.3 margin is wider than the cached crops':
    frames are re-read) and test-colour with moving-average smoothing."""
    root = tmp_path_factory.mktemp("explain")
    for label, colour in (("real", (255, 255, 255)), ("fake", (120, 120, 255))):
        folder = root / "data" / label
        folder.mkdir(parents=True)
        for k in range(4):
            _video(folder / f"v{k}.mp4", colour, k + (10 if label == "fake" else 0))
        image = np.full((60, 80, 3), 30, np.uint8)
        image[10:40, 20:44] = colour
        cv2.imwrite(str(folder / "c.png"), image)
    cache = root / "cache.h5"
    config = ExtractorConfig(frames=6, detector="test-blob", keep_crops=64,
                             backbones=("test-colour", "test-grey"))
    extract([root / "data"], cache, config)
    models = {}
    for name, features, aggregation in (
            ("grey", ("test-grey",), Aggregation()),
            ("colour", ("test-colour",), Aggregation()),
            ("smoothed", ("test-colour",), Aggregation(smoothing="moving", window=3))):
        models[name] = root / f"{name}.fpm"
        api.fit(cache, "logreg", models[name], features=features, aggregation=aggregation,
                protocol=api.Protocol(folds=2))
    return {"root": root, "cache": cache, "models": models}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("model, source", [("grey", "cache"), ("colour", "media")])
def test_explain_video_ranks_frames_and_maps_them(world, model, source, tmp_path):
    vid = "data/fake/v1.mp4"
    expl = ex.explain_video(world["models"][model], world["cache"], vid, top_k=3)
    assert expl.crop_source == source
    scores = [f.score for f in expl.top_frames]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert [f.rank for f in expl.top_frames] == [1, 2, 3]
    timeline = expl.timeline
    assert np.all(np.diff(timeline["frame"]) > 0)  # time order
    assert max(timeline["score"]) == pytest.approx(scores[0])
    size = expl.crop_spec.size
    for frame in expl.top_frames:
        assert frame.crop.shape == frame.overlay.shape == (size, size, 3)
        assert frame.crop.dtype == frame.overlay.dtype == np.uint8
        assert frame.heatmap.shape == (size, size)
        assert frame.frame_index in set(timeline["frame"])
    if source == "media":  # re-aligned at the backbone's own geometry: the very same crops
        assert [f.crop_score for f in expl.top_frames] == pytest.approx(scores, abs=1e-6)
    # the video score is the one `fakeprobe evaluate` gives
    report, _ = api.evaluate(world["models"][model], world["cache"])
    expected = {v["id"]: v["score"] for v in report.video_scores}[vid]
    assert expl.score == pytest.approx(expected)
    png = ex.save_explanation(expl, tmp_path / "v.png")
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert ex.render_explanation(expl)[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(finite(expl.to_dict()), allow_nan=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_timeline_is_smoothed_as_the_model_smooths(world):
    expl = ex.explain_video(world["models"]["smoothed"], world["cache"], "data/real/v2.mp4",
                            top_k=1)
    raw = expl.timeline["score"]
    assert len(raw) >= 3 and len(np.unique(expl.timeline["track"])) == 1
    # the model's moving average of 3, centred, over fewer frames at the ends
    by_hand = [raw[max(0, t - 1):t + 2].mean() for t in range(len(raw))]
    np.testing.assert_allclose(expl.timeline["smoothed"], by_hand)
    assert not np.allclose(expl.timeline["smoothed"], raw)
    assert expl.score == pytest.approx(expl.timeline["smoothed"].mean())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_image_is_one_frame(world, tmp_path):
    expl = ex.explain_video(world["models"]["colour"], world["cache"], "data/fake/c.png",
                            top_k=4)
    assert len(expl.top_frames) == 1 and len(expl.timeline["score"]) == 1
    image = cv2.imread(str(ex.save_explanation(expl, tmp_path / "c.png")))
    assert image is not None and image.size > 0


def test_unknown_and_faceless_items_are_clear_errors(world):
    with pytest.raises(FakeprobeError, match="did you mean 'data/fake/v1.mp4'"):
        ex.explain_video(world["models"]["grey"], world["cache"], "data/fake/v1.mp")
    with CacheReader(world["cache"]) as cache:
        assert set(cache.videos()["status"]) == {"ok"}


def test_a_backbone_with_other_weights_is_refused(world):
    model = load_model(world["models"]["grey"])
    configs = model.provenance["feature_configs"]
    model.provenance["feature_configs"] = {"test-grey": {**configs["test-grey"], "dim": 7}}
    scorer = ex.ModelScorer(model)
    with pytest.raises(ConfigMismatch, match=r"'test-grey' here differs .* \(dim: 7 vs 1;"):
        scorer.backbone("test-grey")


def test_safe_names_are_file_names_and_unique():
    taken: set[str] = set()
    assert ex.safe_name("data/fake/v1.mp4", taken) == "data_fake_v1.mp4"
    assert ex.safe_name("data:fake/v1.mp4", taken).startswith("data_fake_v1.mp4-")
    assert "/" not in ex.safe_name("../../etc/passwd")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_writes_figures_and_json(world, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(world["models"]["colour"]), str(world["cache"]),
                                 "--id", "data/fake/v0.mp4", "--top-fakes", "2",
                                 "--top-frames", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "explanations.json").read_text())
    ids = [item["id"] for item in data["items"]]
    assert ids[0] == "data/fake/v0.mp4" and len(ids) in (2, 3) and len(set(ids)) == len(ids)
    for item in data["items"]:
        assert {"id", "score", "label", "threshold", "top_frames", "timeline"} <= set(item)
        assert item["label"] in ("fake", "real")
        assert len(item["top_frames"]) <= 2
        for frame in item["top_frames"]:
            assert {"frame", "time", "score", "regions"} <= set(frame)
        image = cv2.imread(item["png"])
        assert image is not None and image.size > 0
    assert len(list(out.glob("*.png"))) == len(ids)


def test_cli_json_to_stdout(world, tmp_path):
    result = runner.invoke(app, ["explain", str(world["models"]["grey"]), str(world["cache"]),
                                 "--id", "data/real/c.png", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"id": "data/real/c.png"' in result.output


def test_cli_unknown_id_is_one_line_and_exit_1(world, tmp_path):
    result = runner.invoke(app, ["explain", str(world["models"]["grey"]), str(world["cache"]),
                                 "--id", "nope.mp4", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no item 'nope.mp4'" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # checked before any work


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_item_whose_media_is_gone_is_recorded_and_the_rest_go_on(world, tmp_path,
                                                                    monkeypatch):
    from fakeprobe.errors import MediaError
    from fakeprobe.extractor import frames

    real_read = frames.read_media

    def read_media(path, *args, **kwargs):
        if path.name == "v0.mp4":
            raise MediaError("file not found", status="missing")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(frames, "read_media", read_media)
    result = ex.explain_items(world["models"]["colour"], world["cache"], tmp_path,
                              ids=["data/fake/v0.mp4", "data/fake/v1.mp4"], top_k=1)
    assert [e.id for e in result.items] == ["data/fake/v1.mp4"]
    assert result.failures[0]["id"] == "data/fake/v0.mp4"
    assert "cannot re-read" in result.failures[0]["error"]
    saved = json.loads(result.json_path.read_text())
    assert saved["failures"] == result.failures
    with pytest.raises(FakeprobeError, match="no item could be explained"):
        ex.explain_items(world["models"]["colour"], world["cache"], tmp_path / "b",
                         ids=["data/fake/v0.mp4"])
