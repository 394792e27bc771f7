"""Augmentation at extraction (``extract --augment``): the transforms, the spec, the marked rows
in the cache, and that augmented rows train but never reach a score."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import write_video
from fakeprobe.core.augment import AugmentStep, canonical, parse_augment, row_names
from fakeprobe.errors import ConfigError
from fakeprobe.extractor import augment as aug
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.run import extract


@pytest.fixture()
def crop() -> np.ndarray:
    """A 64-px RGB crop with an asymmetric gradient, a sharp square and a fine checkerboard
    (high frequencies that blur, scaling and JPEG must remove)."""
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 3, y * 2, (x + y)], axis=-1).astype(np.float32)
    image[8:24, 40:56] = 230
    image[40:56, 8:24] += 60 * ((x[40:56, 8:24] + y[40:56, 8:24]) % 2)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _detail(image: np.ndarray) -> float:
    """High-frequency energy: variance of the Laplacian of the grey image."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


# --- the transforms ----------------------------------------------------------------------

def test_flip_mirrors_the_crop(crop):
    out = aug.flip(crop)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, 0], crop[:, -1]) and np.array_equal(out[:, ::-1], crop)
    assert not np.array_equal(out, crop)


def test_jpeg_loses_more_at_lower_quality(crop):
    errors = {}
    for quality in (95, 60, 10):
        out = aug.jpeg(crop, quality)
        assert out.shape == crop.shape and out.dtype == np.uint8
        errors[quality] = np.abs(out.astype(int) - crop).mean()
    assert 0 < errors[95] < errors[60] < errors[10]
    # the colour order survives the round trip (RGB in, RGB out): the red ramp stays red
    assert np.corrcoef(aug.jpeg(crop, 60)[..., 0].ravel(), crop[..., 0].ravel())[0, 1] > 0.95


def test_blur_removes_detail_more_with_a_larger_sigma(crop):
    light, heavy = aug.blur(crop, 0.8), aug.blur(crop, 3.0)
    assert light.shape == crop.shape
    assert _detail(heavy) < _detail(light) < _detail(crop)
    assert abs(float(heavy.mean()) - float(crop.mean())) < 3  # blurring keeps the brightness


def test_noise_has_the_asked_spread_and_is_seeded():
    flat = np.full((64, 64, 3), 128, np.uint8)
    out = aug.noise(flat, 10.0, np.random.default_rng(1))
    assert abs(float((out.astype(float) - 128).std()) - 10.0) < 0.5
    assert np.array_equal(out, aug.noise(flat, 10.0, np.random.default_rng(1)))
    assert not np.array_equal(out, aug.noise(flat, 10.0, np.random.default_rng(2)))


def test_scale_down_and_up_keeps_the_size_and_loses_detail(crop):
    out = aug.scale(crop, 0.25)
    assert out.shape == crop.shape
    assert _detail(out) < 0.5 * _detail(crop)
    assert abs(float(out.mean()) - float(crop.mean())) < 3


def test_apply_dispatches_every_transform(crop):
    rng = np.random.default_rng(0)
    for step in parse_augment("flip,jpeg:30,blur:2,noise:5,scale:0.5"):
        out = aug.apply(step, crop, rng)
        assert out.shape == crop.shape and out.dtype == np.uint8
        assert not np.array_equal(out, crop), step


# --- the spec ----------------------------------------------------------------------------

def test_spec_parses_with_defaults_params_and_copies():
    steps = parse_augment(" flip, JPEG:60*2 ,blur,noise:4.5,scale:0.25")
    assert steps == (AugmentStep("flip", None, 1), AugmentStep("jpeg", 60.0, 2),
                     AugmentStep("blur", 1.5, 1), AugmentStep("noise", 4.5, 1),
                     AugmentStep("scale", 0.25, 1))
    assert canonical("jpeg:60*2, flip") == "jpeg:60*2,flip"
    assert canonical("jpeg") == "jpeg:60" and canonical("") == "" and parse_augment(None) == ()
    assert row_names("flip,noise*3") == ["flip", "noise:8", "noise:8#2", "noise:8#3"]


@pytest.mark.parametrize("spec, message", [
    ("sharpen", "unknown augmentation 'sharpen'"),
    ("jpeg:0", "jpeg takes a value in [1, 100]"),
    ("jpeg:high", "must be a whole number"),
    ("scale:1", "scale takes a value in (0, 1)"),
    ("blur:0", "blur takes a value in (0, 20]"),
    ("flip:2", "takes no parameter"),
    ("flip*0", "copies must be from 1 to 16"),
    ("flip*x", "copies must be a whole number"),
    ("flip,,blur", "empty entry"),
    ("jpeg:60,jpeg:60", "named twice"),
])
def test_bad_specs_are_refused_in_one_line(spec, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_augment(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_command_line_refuses_a_bad_spec_in_one_line(media_tree, tmp_path):
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    result = CliRunner().invoke(app, ["extract", str(media_tree), "--out",
                                      str(tmp_path / "c.h5"), "--detector", "test-blob",
                                      "--backbone", "test-colour", "--augment", "jpeg:500"])
    assert result.exit_code == 2, result.output  # a bad option value: a usage error
    assert "jpeg takes a value in [1, 100]" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "c.h5").exists()


# --- the cache ---------------------------------------------------------------------------

SPEC = "flip,noise:20*2"


@pytest.fixture()
def groups_tree(tmp_path: Path) -> Path:
    """``data/real`` and ``data/fake``: 4 videos each, 8 groups (a CSV-free folder tree:
    every item is its own group), faces brighter in the fakes so a head can tell them."""
    root = tmp_path / "data"
    for label, seed in (("real", 0), ("fake", 100)):
        (root / label).mkdir(parents=True)
        for k in range(4):
            write_video(root / label / f"v{k}.mp4", seed=seed + k, blobs=1 + (label == "fake"))
    return root


def _extract(tree: Path, path: Path, config, spec: str = SPEC) -> Path:
    extract([tree], path, replace(config, augment=spec, keep_crops=24))
    return path


def test_augmented_rows_are_marked_and_follow_the_originals(media_tree, tmp_path, stub_config):
    plain = _extract(media_tree, tmp_path / "plain.h5", stub_config, "")
    path = _extract(media_tree, tmp_path / "aug.h5", stub_config)
    with fcache.CacheReader(path) as cache, fcache.CacheReader(plain) as base:
        assert cache.attrs["schema_version"] == fcache.SCHEMA_VERSION == 3
        assert cache.config.augment == SPEC
        frames, videos = cache.frames(), cache.videos()
        base_frames, base_videos = base.frames(), base.videos()
        assert set(base_frames["augment"]) == {""}
        names = row_names(SPEC)
        for position, vid in enumerate(videos["id"]):
            rows = slice(videos["row_start"][position],
                         videos["row_start"][position] + videos["row_count"][position])
            b = list(base_videos["id"]).index(vid)
            base_rows = slice(base_videos["row_start"][b],
                              base_videos["row_start"][b] + base_videos["row_count"][b])
            marks = frames["augment"][rows]
            n_base = base_rows.stop - base_rows.start
            n_faces = int(base_frames["has_face"][base_rows].sum())
            # the original rows first, identical to a run without augmentation
            assert list(marks[:n_base]) == [""] * n_base
            for column in ("frame_index", "has_face", "track"):
                assert np.array_equal(frames[column][rows][:n_base],
                                      base_frames[column][base_rows])
            np.testing.assert_array_equal(cache.features("test-colour")[rows][:n_base],
                                          base.features("test-colour")[base_rows])
            # then one copy of every face row per row name, marked with it
            assert list(marks[n_base:]) == [n for n in names for _ in range(n_faces)]
            assert frames["has_face"][rows][n_base:].all()
        # a flipped row's crop is the mirror of its original's; noise copies differ
        crops, marks = cache.crops(slice(0, cache.n_rows)), frames["augment"]
        first = np.flatnonzero(marks == "")[0]
        flipped = np.flatnonzero((marks == "flip")
                                 & (frames["frame_index"] == frames["frame_index"][first])
                                 & (frames["video"] == frames["video"][first]))[0]
        assert np.array_equal(crops[flipped], crops[first][:, ::-1])
        noisy = np.flatnonzero(marks == "noise:20")[0]
        again = np.flatnonzero(marks == "noise:20#2")[0]
        assert not np.array_equal(crops[noisy], crops[again])
        assert abs(float((crops[noisy].astype(float) - crops[first]).std()) - 20) < 6


def test_augmented_rows_are_the_same_in_every_run(media_tree, tmp_path, stub_config):
    one = _extract(media_tree, tmp_path / "one.h5", stub_config)
    two = _extract(media_tree, tmp_path / "two.h5", replace(stub_config), SPEC)
    with fcache.CacheReader(one) as a, fcache.CacheReader(two) as b:
        order_a, order_b = np.argsort(a.videos()["id"]), np.argsort(b.videos()["id"])
        assert np.array_equal(a.videos()["row_count"][order_a], b.videos()["row_count"][order_b])
        for pa, pb in zip(order_a, order_b):
            ra = slice(a.videos()["row_start"][pa], a.videos()["row_start"][pa]
                       + a.videos()["row_count"][pa])
            rb = slice(b.videos()["row_start"][pb], b.videos()["row_start"][pb]
                       + b.videos()["row_count"][pb])
            np.testing.assert_array_equal(a.features("test-colour")[ra],
                                          b.features("test-colour")[rb])


def test_another_spec_on_the_same_cache_is_refused(media_tree, tmp_path, stub_config):
    from fakeprobe.errors import ConfigMismatch

    path = _extract(media_tree, tmp_path / "c.h5", stub_config)
    with pytest.raises(ConfigMismatch, match="augment"):
        _extract(media_tree, path, stub_config, "flip")


def test_a_cache_without_the_augment_field_reads_as_all_original(media_tree, tmp_path,
                                                                   stub_config):
    from fakeprobe.classifiers.data import load_frames

    path = _extract(media_tree, tmp_path / "old.h5", stub_config, "")
    with h5py.File(path, "r+") as h5:  # make it the version 2 layout
        del h5["frames/augment"]
        h5.attrs["schema_version"] = 2
        config = h5.attrs["extractor_config"]
        h5.attrs["extractor_config"] = config.replace(', "augment": ""', "")
    with fcache.CacheReader(path) as cache:
        assert cache.attrs["schema_version"] == 2
        frames = cache.frames()
        assert set(frames["augment"]) == {""} and len(frames["augment"]) == cache.n_rows
        assert cache.config.augment == ""
    data = load_frames(path, ["test-colour"], augmented=True)
    assert data.original.all() and len(data.y) == len(load_frames(path, ["test-colour"]).y)
    # its next commit makes it version 3, with the column filled for the old rows
    write_video(media_tree / "real" / "d.mp4", seed=7)
    _extract(media_tree, path, stub_config, "")
    with fcache.CacheReader(path) as cache:
        assert cache.attrs["schema_version"] == 3
        assert set(cache.frames()["augment"]) == {""}
        assert len(cache.frames()["augment"]) == cache.n_rows


# --- never scored ------------------------------------------------------------------------

POISON = 1e3


def _poison(path: Path) -> int:
    """Overwrite the features of every augmented row with :data:`POISON`; their count."""
    with h5py.File(path, "r+") as h5:
        marks = h5["frames/augment"].asstr()[:]
        rows = np.flatnonzero(marks != "")
        data = h5["features/test-colour/data"]
        values = data[:]
        values[rows] = POISON
        data[...] = values
    return len(rows)


def test_augmented_rows_train_but_are_never_scored_in_cv(groups_tree, tmp_path, stub_config,
                                                         monkeypatch):
    from fakeprobe.classifiers.data import load_frames
    from fakeprobe.training import cv

    path = _extract(groups_tree, tmp_path / "c.h5", stub_config)
    assert _poison(path) > 0
    data = load_frames(path, ["test-colour"], augmented=True)
    plain = load_frames(path, ["test-colour"])
    n_original = len(plain.y)
    assert (~data.original).sum() > 0 and data.original.sum() == n_original
    assert (data.X[~data.original] == POISON).all()

    fitted, scored = [], []
    real_fit, real_proba = cv.fit_head, cv.fake_proba

    def fit_spy(head, X, y, video, groups, *rest):
        fitted.append((X.copy(), set(groups)))
        return real_fit(head, X, y, video, groups, *rest)

    def proba_spy(model, X, **params):
        scored.append(X.copy())
        return real_proba(model, X, **params)

    monkeypatch.setattr(cv, "fit_head", fit_spy)
    monkeypatch.setattr(cv, "fake_proba", proba_spy)
    folds = cv.grouped_folds(plain, n_splits=2)
    report = cv.cross_validate(data, "logreg", folds=folds)
    # nothing poisoned was ever scored; every fit (outer and inner) saw augmented rows
    assert scored and not any((X == POISON).any() for X in scored)
    assert fitted and all((X == POISON).all(axis=1).any() for X, _ in fitted)
    # each outer fit holds the augmented rows of its own training groups only
    outer = fitted[-1]
    test_groups = set(data.videos["group"][folds[-1][1]])
    assert not outer[1] & test_groups
    assert report.n_frames == n_original
    assert len(report.frame_scores["score"]) == n_original
    assert sum(v["frames"] for v in report.video_scores) == n_original


def test_augmented_rows_never_reach_a_saved_model_s_scores(groups_tree, tmp_path, stub_config):
    from fakeprobe.app import evaluate, fit
    from fakeprobe.evaluation.explain import explain_video

    path = _extract(groups_tree, tmp_path / "c.h5", stub_config)
    clean = tmp_path / "clean.h5"
    clean.write_bytes(path.read_bytes())
    model = tmp_path / "m.skops"
    fit(clean, "logreg", model)
    _poison(path)
    with fcache.CacheReader(clean) as cache:
        n_original = int((cache.frames()["augment"] == "").sum()
                         - (~cache.frames()["has_face"]).sum())
    poisoned, _ = evaluate(model, path)
    reference, _ = evaluate(model, clean)
    assert poisoned.n_frames == reference.n_frames == n_original
    assert [v["score"] for v in poisoned.video_scores] == pytest.approx(
        [v["score"] for v in reference.video_scores])
    # explain's per-frame timeline: the same frames and scores with or without poison
    video_id = reference.video_scores[0]["id"]
    a = explain_video(model, path, video_id, top_k=1)
    b = explain_video(model, clean, video_id, top_k=1)
    assert len(a.timeline["score"]) == len(b.timeline["score"]) == reference.video_scores[0][
        "frames"]
    for key in ("frame", "track", "score"):
        np.testing.assert_allclose(a.timeline[key], b.timeline[key])
    assert a.score == pytest.approx(b.score)


def test_predict_never_makes_augmented_rows(groups_tree, tmp_path, stub_config):
    from fakeprobe.app import fit, predict

    path = _extract(groups_tree, tmp_path / "c.h5", stub_config)
    model = tmp_path / "m.skops"
    fit(path, "logreg", model)
    kept = tmp_path / "predict.h5"
    result = predict(model, [groups_tree / "fake" / "v0.mp4"], cache_path=kept)
    with fcache.CacheReader(kept) as cache:
        assert cache.config.augment == ""
        assert set(cache.frames()["augment"]) == {""}
    assert len(result.to_dict()["predictions"]) == 1


def test_the_dask_head_reads_original_rows_only(groups_tree, tmp_path, stub_config):
    from fakeprobe.classifiers.data import load_frames
    from fakeprobe.distributed.heads import row_index

    path = _extract(groups_tree, tmp_path / "c.h5", stub_config)
    index = row_index(path, ["test-colour"])
    plain = load_frames(path, ["test-colour"])
    with fcache.CacheReader(path) as cache:
        marks = cache.frames(("augment",))["augment"]
    assert (marks != "").any() and (marks[index.rows] == "").all()
    assert len(index.rows) == len(plain.y)
