"""Derived temporal feature sets (``fakeprobe derive``) on small synthetic caches."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.classifiers.data import load_frames
from fakeprobe.cli import app
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.features import temporal
from fakeprobe.features import cache as fcache
from fakeprobe.features.temporal import (LANDMARK_COLUMNS, SEQUENCE_COLUMNS, derive,
                                         landmark_stats, sequence_stats, time_steps)

runner = CliRunner()
FACE = np.array([[30, 40], [60, 40], [45, 55], [33, 70], [57, 70]], np.float64)
FEAT_CONFIG = {"name": "feat", "dim": 6, "weights": "feat.bin", "weights_sha256": "abc"}


def moving_face(n: int, jitter: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks and boxes of a face that drifts and grows rigidly; ``jitter`` pixels of noise
    move each landmark on its own."""
    rng = np.random.default_rng(seed)
    scale = 1.0 + 0.02 * np.arange(n)
    shift = np.stack([3.0 * np.arange(n), 1.0 * np.arange(n)], axis=1)
    marks = FACE[None] * scale[:, None, None] + shift[:, None, :]
    marks = marks + rng.normal(0, jitter, marks.shape) if jitter else marks
    boxes = np.stack([shift[:, 0] + 20, shift[:, 1] + 20, 50 * scale, 60 * scale], axis=1)
    return marks.astype(np.float32), boxes.astype(np.float32)


def make_rows(marks: np.ndarray, boxes: np.ndarray, track=None, has_face=None,
              frame_index=None, fps: float = 25.0) -> fcache.FrameRows:
    n = len(marks)
    frame_index = np.arange(0, 3 * n, 3) if frame_index is None else np.asarray(frame_index)
    has_face = np.ones(n, bool) if has_face is None else np.asarray(has_face)
    marks, boxes = marks.copy(), boxes.copy()
    marks[~has_face], boxes[~has_face] = np.nan, np.nan
    return fcache.FrameRows(
        frame_index=frame_index, timestamp=frame_index / fps, box=boxes, landmarks=marks,
        score=np.ones(n, np.float32),
        track=np.where(has_face, 0 if track is None else track, -1).astype(np.int32),
        has_face=has_face)


def add_item(path: Path, vid: str, rows: fcache.FrameRows, feats: np.ndarray, *,
             label: str = "real", group: str = "g", fps: float = 25.0, kind: str = "video",
             status: str = "ok") -> None:
    feats = np.asarray(feats, np.float32).copy()
    feats[~rows.has_face] = np.nan
    record = fcache.VideoRecord(id=vid, path=vid, kind=kind, label=label, group=group,
                                dataset="d", method="m" if label == "fake" else "orig",
                                fps=fps, status=status)
    fcache.stage(path, fcache.StagedItem(record, rows=rows, features={"feat": feats}))


def commit(path: Path) -> Path:
    fcache.commit(path, ExtractorConfig(frames=8, backbones=("feat",)), {"feat": FEAT_CONFIG})
    return path


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """One cache with: a two-track video with no-face frames between ("two"), a static and a
    jittered video, an image, a one-face-row video, a faceless video and a missing item."""
    path = tmp_path / "mixed.h5"
    rng = np.random.default_rng(1)
    a_marks, a_boxes = moving_face(6)
    b_marks, b_boxes = moving_face(6, jitter=2.0, seed=3)
    marks = np.concatenate([a_marks, b_marks + 100, a_marks[:2]])
    boxes = np.concatenate([a_boxes, b_boxes + [100, 100, 0, 0], a_boxes[:2]])
    frame_index = np.r_[np.arange(0, 18, 3), np.arange(0, 18, 3), 30, 33]
    track = np.r_[np.zeros(6), np.ones(6), -1, -1].astype(int)
    has_face = np.r_[np.ones(12, bool), False, False]
    add_item(path, "two", make_rows(marks, boxes, track, has_face, frame_index),
             rng.normal(size=(14, 6)))
    add_item(path, "static", make_rows(*moving_face(8)), np.ones((8, 6)))
    add_item(path, "jitter", make_rows(*moving_face(8, jitter=2.0)), rng.normal(size=(8, 6)))
    image_marks, image_boxes = moving_face(1)
    add_item(path, "image", make_rows(image_marks, image_boxes, frame_index=[0]),
             rng.normal(size=(1, 6)), kind="image", fps=float("nan"))
    lone_marks, lone_boxes = moving_face(4)
    add_item(path, "lone", make_rows(lone_marks, lone_boxes, has_face=[False, True, False,
                                                                         False]),
             rng.normal(size=(4, 6)))
    add_item(path, "faceless", make_rows(lone_marks, lone_boxes, has_face=np.zeros(4, bool)),
             np.zeros((4, 6)), status="no_face")
    fcache.stage(path, fcache.StagedItem(fcache.VideoRecord(
        id="missing", path="x", kind="video", label="fake", group="g", status="missing")))
    return commit(path)


def rows_of(path: Path, name: str, vid: str) -> tuple[np.ndarray, dict]:
    with fcache.CacheReader(path) as cache:
        position = list(cache.videos()["id"]).index(vid)
        rows = dict(cache.iter_video_rows())[position]
        frames = {k: v[rows] for k, v in cache.frames(("track", "has_face")).items()}
        return cache.features(name, rows), frames


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the statistics ---------------------------------------------------------------------------

def test_a_rigidly_moving_face_has_no_landmark_motion_and_a_jittered_one_has_some():
    marks, boxes = moving_face(10)
    dt = np.full(9, 0.1)
    still = landmark_stats(marks, boxes, dt)
    shaky = landmark_stats(*moving_face(10, jitter=1.5), dt)
    speeds = slice(0, 15)
    assert np.allclose(still[speeds], 0, atol=1e-5)
    assert np.all(shaky[speeds] > 0.01)
    assert still[LANDMARK_COLUMNS.index("scale_box_mismatch_mean")] == pytest.approx(0, abs=1e-4)
    assert shaky[LANDMARK_COLUMNS.index("residual_std")] > still[
        LANDMARK_COLUMNS.index("residual_std")]
    # speeds are per second: the same motion sampled at half the rate is half as fast
    slow = landmark_stats(*moving_face(10, jitter=1.5), dt * 2)
    assert np.allclose(slow[speeds], shaky[speeds] / 2)


def test_alternating_vectors_are_further_apart_step_to_step_than_constant_or_drifting_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=32), rng.normal(size=32)
    step = SEQUENCE_COLUMNS.index("cos_step_mean")
    flicker = sequence_stats(np.stack([a, b] * 5))
    constant = sequence_stats(np.stack([a] * 10))
    drift = sequence_stats(a + np.linspace(0, 1, 10)[:, None] * (b - a))
    assert flicker[step] > drift[step] > constant[step] == pytest.approx(0, abs=1e-9)
    assert np.allclose(constant, 0, atol=1e-9)
    ratio = SEQUENCE_COLUMNS.index("von_neumann")
    assert flicker[ratio] == pytest.approx(2.0) and drift[ratio] < 0.1


def test_time_steps_use_fps_then_timestamps_then_a_nominal_rate():
    index = np.array([0, 10, 30])
    assert time_steps(index, index / 30, 25.0) == pytest.approx([0.4, 0.8])
    assert time_steps(index, index / 30, float("nan")) == pytest.approx([1 / 3, 2 / 3])
    nan = np.full(3, np.nan)
    assert time_steps(index, nan, float("nan")) == pytest.approx(
        np.array([10, 20]) / temporal.NOMINAL_FPS)


# --- derive on a cache ----------------------------------------------------------------------

def test_vectors_are_broadcast_to_exactly_the_face_rows_of_each_track(mixed):
    summary = derive(mixed, ["landmarks", "feat-temporal"])
    assert summary.feature_sets["landmarks"]["computed"] == 6  # the missing item has no rows
    for name in ("landmarks", "feat-temporal"):
        values, frames = rows_of(mixed, name, "two")
        assert np.isnan(values[~frames["has_face"]]).all()
        first, second = values[frames["track"] == 0], values[frames["track"] == 1]
        assert len(first) == len(second) == 6
        assert (first == first[0]).all() and (second == second[0]).all()
        assert not np.array_equal(first[0], second[0])
    marks, _ = rows_of(mixed, "landmarks", "two")
    speeds = slice(0, 15)
    assert np.allclose(marks[0, speeds], 0, atol=1e-4) and (marks[6, speeds] > 0.01).all()
    still, _ = rows_of(mixed, "landmarks", "static")
    shaky, _ = rows_of(mixed, "landmarks", "jitter")
    assert shaky[0, speeds].mean() > 100 * max(still[0, speeds].mean(), 1e-6)
    with fcache.CacheReader(mixed) as cache:
        sets = cache.feature_sets
        done = cache.feature_done("landmarks")
    assert done.tolist() == [True] * 6 + [False]  # the missing item is not done
    assert sets["landmarks"]["dim"] == len(LANDMARK_COLUMNS)
    assert sets["feat-temporal"]["dim"] == len(SEQUENCE_COLUMNS) < 20
    provenance = sets["feat-temporal"]
    assert provenance["derived_from"] == "feat" and provenance["version"] == 1
    assert provenance["base_weights_sha256"] == "abc" and len(provenance["base_config_sha256"]) \
        == 64


def test_one_row_tracks_and_images_are_nan_free_and_flagged(mixed):
    derive(mixed, ["landmarks", "feat-temporal"])
    for vid in ("image", "lone"):
        for name, columns in (("landmarks", LANDMARK_COLUMNS),
                              ("feat-temporal", SEQUENCE_COLUMNS)):
            values, frames = rows_of(mixed, name, vid)
            face = values[frames["has_face"]]
            assert len(face) == 1 and np.isfinite(face).all()
            assert face[0, columns.index("single_row")] == 1.0
            motion = [i for i, c in enumerate(columns) if "speed" in c or "step" in c]
            assert (face[0, motion] == 0).all()
            assert np.isnan(values[~frames["has_face"]]).all()
    values, _ = rows_of(mixed, "landmarks", "faceless")
    assert np.isnan(values).all()


def test_running_derive_again_is_a_no_op(mixed):
    derive(mixed, ["landmarks"])
    before = sha256(mixed)
    again = derive(mixed, ["landmarks"])
    assert again.feature_sets["landmarks"]["computed"] == 0
    assert again.feature_sets["landmarks"]["already_done"] == 6
    assert again.committed == 0 and sha256(mixed) == before
    assert not fcache.staging_dir(mixed).exists()


def test_new_items_and_new_sets_are_added_on_a_later_run(mixed):
    derive(mixed, ["landmarks"])
    add_item(mixed, "late", make_rows(*moving_face(5)), np.ones((5, 6)))
    commit(mixed)
    later = derive(mixed, ["landmarks", "feat-temporal"])
    assert later.feature_sets["landmarks"]["computed"] == 1
    assert later.feature_sets["feat-temporal"]["computed"] == 7


def test_a_killed_run_is_committed_by_the_next(mixed, tmp_path, monkeypatch):
    clean = shutil.copyfile(mixed, tmp_path / "clean.h5")
    derive(clean, ["landmarks"])

    def killed(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(fcache, "commit", killed)
        with pytest.raises(RuntimeError):
            derive(mixed, ["landmarks"])
    assert len(fcache.staged_files(mixed)) == 6
    with fcache.CacheReader(mixed) as cache:
        assert "landmarks" not in cache.feature_sets  # the cache itself was never touched
    resumed = derive(mixed, ["landmarks"])
    assert resumed.leftovers_committed == 6
    assert resumed.feature_sets["landmarks"]["computed"] == 0
    with fcache.CacheReader(mixed) as a, fcache.CacheReader(clean) as b:
        np.testing.assert_array_equal(a.features("landmarks"), b.features("landmarks"))


def test_staged_extraction_work_is_left_to_extract(mixed):
    add_item(mixed, "pending", make_rows(*moving_face(3)), np.ones((3, 6)))
    with pytest.raises(FakeprobeError, match="fakeprobe extract"):
        derive(mixed, ["landmarks"])
    assert len(fcache.staged_files(mixed)) == 1


def test_a_set_derived_otherwise_is_refused_by_derive_and_by_models(tmp_path):
    path = make_head_cache(tmp_path / "a.h5")
    derive(path, ["feat-temporal"])
    model = tmp_path / "m.fpm"
    api.fit(path, "logreg", model, features=["feat-temporal"],
            protocol=api.Protocol(folds=4))
    # the same items with other weights behind "feat": its temporal set means something else
    other = make_head_cache(tmp_path / "b.h5")
    with h5py.File(other, "r+") as h5:
        h5["features/feat"].attrs["config"] = json.dumps({**FEAT_CONFIG,
                                                          "weights_sha256": "zzz"})
    derive(other, ["feat-temporal"])
    with pytest.raises(ConfigMismatch, match="base_weights_sha256"):
        api.evaluate(model, other)
    with h5py.File(path, "r+") as h5:
        h5["features/feat"].attrs["config"] = json.dumps({**FEAT_CONFIG, "weights": "v2.bin"})
    with pytest.raises(ConfigMismatch, match="derived otherwise|made otherwise"):
        derive(path, ["feat-temporal"])


def test_names_that_cannot_be_derived_are_refused(mixed):
    with pytest.raises(FakeprobeError, match="no feature set 'nope'"):
        derive(mixed, ["nope-temporal"])
    with pytest.raises(FakeprobeError, match="cannot derive"):
        derive(mixed, ["feat"])
    derive(mixed, ["landmarks"])
    with pytest.raises(FakeprobeError, match="itself derived"):
        derive(mixed, ["landmarks-temporal"])


# --- heads on derived sets ------------------------------------------------------------------

def make_head_cache(path: Path, n_groups: int = 8) -> Path:
    """Per group one real (steady landmarks, steady features) and one fake (jittered landmarks,
    flickering features), 8 frames each; plus a faceless real."""
    rng = np.random.default_rng(7)
    for g in range(n_groups):
        center = rng.normal(size=6)
        real = center + rng.normal(0, 0.05, (8, 6))
        fake = center + rng.normal(0, 0.05, (8, 6)) + np.outer(np.resize([1, -1], 8), np.ones(6))
        add_item(path, f"g{g}/real", make_rows(*moving_face(8, jitter=0.2, seed=g)), real,
                 group=f"g{g}")
        add_item(path, f"g{g}/fake", make_rows(*moving_face(8, jitter=2.0, seed=100 + g)),
                 fake, label="fake", group=f"g{g}")
    add_item(path, "faceless", make_rows(*moving_face(4), has_face=np.zeros(4, bool)),
             np.zeros((4, 6)), status="no_face")
    return commit(path)


def test_heads_and_compare_use_the_derived_sets(tmp_path):
    path = make_head_cache(tmp_path / "heads.h5")
    derived = runner.invoke(app, ["derive", str(path), "--landmarks", "--temporal", "feat",
                                  "--json"])
    assert derived.exit_code == 0, derived.output
    summary = json.loads(derived.stdout)
    assert summary["feature_sets"]["landmarks"]["computed"] == 17
    data = load_frames(path, ["landmarks"])
    assert data.X.shape == (16 * 8, len(LANDMARK_COLUMNS)) and np.isfinite(data.X).all()
    assert [e["id"] for e in data.excluded] == ["faceless"]
    result = runner.invoke(app, ["compare", str(path), "-f", "landmarks", "-f",
                                 "feat+feat-temporal", "--head", "logreg", "--cv", "4",
                                 "--json"])
    assert result.exit_code == 0, result.output
    aucs = {"+".join(r["features"]): r["video"]["roc_auc"]
            for r in json.loads(result.stdout)["reports"]}
    assert aucs["landmarks"] > 0.9 and aucs["feat+feat-temporal"] > 0.9
    table = runner.invoke(app, ["compare", str(path), "-f", "landmarks", "--head", "logreg"])
    assert table.exit_code == 0, table.output


def test_derive_command_messages(tmp_path):
    path = make_head_cache(tmp_path / "c.h5")
    unknown = runner.invoke(app, ["derive", str(path), "--temporal", "nope"])
    assert unknown.exit_code == 1
    assert "no feature set 'nope'" in unknown.output and len(unknown.output.strip()
                                                             .splitlines()) <= 2
    nothing = runner.invoke(app, ["derive", str(path)])
    assert nothing.exit_code == 1 and "nothing to derive" in nothing.output
    table = runner.invoke(app, ["derive", str(path), "--landmarks"])
    assert table.exit_code == 0 and "landmarks" in table.stdout
    helped = runner.invoke(app, ["derive", "--help"])
    assert helped.exit_code == 0
    assert "--temporal" in helped.output and "compare" in helped.output


def test_predict_derives_the_sets_a_model_was_trained_on(media_tree, tmp_path):
    """A model on `landmarks` (+ a backbone's temporal set) predicts new media: predict
    extracts the base backbone only and derives the rest, as at training."""
    from dataclasses import replace

    from fakeprobe.pipeline.run import extract

    config = ExtractorConfig(frames=6, detector="test-blob", backbones=("test-colour",))
    path = tmp_path / "c.h5"
    extract([media_tree], path, config)
    derive(path, ("landmarks", "test-colour-temporal"))
    model = tmp_path / "m.fpm"
    api.fit(path, "logreg", model, features=["landmarks", "test-colour-temporal"],
            protocol=api.Protocol(folds=3))
    result = api.predict(model, [media_tree / "real" / "a.mp4", media_tree / "fake" / "c.png"])
    assert [p.status for p in result.predictions] == ["ok", "ok"]
    assert all(0.0 <= p.score <= 1.0 for p in result.predictions)
    # and rows alone can be extracted (no backbone) for a landmarks-only model
    bare = tmp_path / "bare.h5"
    extract([media_tree], bare, replace(config, backbones=()))
    assert derive(bare, ("landmarks",)).feature_sets["landmarks"]["computed"] == 6
