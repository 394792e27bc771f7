"""The temporal head: a Keras GRU over face-track sequences, as a scikit-learn estimator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import import_core
from fakeprobe import app as api
from fakeprobe.classifiers.data import load_frames
from fakeprobe.classifiers.heads import new_head
from fakeprobe.classifiers.model import load_model
from fakeprobe.classifiers.sequence import SequenceGRU, pack_sequences, sequence_ids
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.errors import FakeprobeError
from fakeprobe.features import cache as fcache
from fakeprobe.training.cv import cross_validate, fake_proba, fit_final

import_core("keras")


def _expected_failures(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data":
            "weights are summed per sequence and scale a stochastic network's loss; "
            "repeating a row is not the same fit",
        "check_methods_sample_order_invariance":
            "a float32 network run in batches: reordering rows changes sums by ~1e-7",
    }


@pytest.mark.slow
@parametrize_with_checks([SequenceGRU(units=8, max_epochs=40, learning_rate=0.03,
                                      patience=40)],
                         expected_failed_checks=_expected_failures)
def test_sequence_gru_follows_scikit_learn(estimator, check):
    check(estimator)


def test_pack_sequences_orders_rows_by_position_within_each_sequence():
    X = np.arange(10, dtype=np.float32).reshape(5, 2)
    packed, mask, owner = pack_sequences(X, np.array([7, 3, 7, 3, 7]), np.array([2, 1, 0, 0, 1]))
    assert packed.shape == (2, 3, 2)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    np.testing.assert_array_equal(packed[1, :, 0], [4, 8, 0])  # id 7: positions 0, 1, 2
    np.testing.assert_array_equal(packed[0, :2, 0], [6, 2])  # id 3: positions 0, 1
    assert owner.tolist() == [1, 0, 1, 0, 1]
    assert sequence_ids(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 0])).tolist() == [0, 1, 2, 2]


def flicker_cache(path: Path, n_groups: int = 12, frames: int = 12, seed: int = 0) -> Path:
    """Per group one real and one fake video, one face track each. A real video repeats one
    feature vector v in every frame; a fake one shows v or -v at random frame to frame. v is
    standard normal, so a single frame of either class has the same distribution: only the
    sequence tells them apart."""
    rng = np.random.default_rng(seed)
    for g in range(n_groups):
        for label in ("real", "fake"):
            v = rng.normal(size=6)
            sign = rng.choice([-1.0, 1.0], size=(frames, 1)) if label == "fake" else 1.0
            feats = (sign * v * np.ones((frames, 6))).astype(np.float32)
            vid = f"d/g{g}/{label}"
            rows = fcache.FrameRows(
                frame_index=np.arange(frames), timestamp=np.arange(frames) / 25.0,
                box=np.ones((frames, 4), np.float32),
                landmarks=np.ones((frames, 5, 2), np.float32),
                score=np.ones(frames, np.float32), track=np.zeros(frames, np.int32),
                has_face=np.ones(frames, bool))
            record = fcache.VideoRecord(id=vid, path=vid, kind="video", label=label,
                                        group=f"d:g{g}", dataset="d", method="A")
            fcache.stage(path, fcache.StagedItem(record, rows=rows, features={"feat": feats}))
    fcache.commit(path, ExtractorConfig(frames=frames, backbones=("feat",)),
                  {"feat": {"name": "feat", "dim": 6, "sha256": "abc"}})
    return path


@pytest.mark.slow
def test_gru_learns_a_sequence_signal_a_frame_head_cannot_and_round_trips(tmp_path):
    cache = flicker_cache(tmp_path / "flicker.h5", n_groups=40, frames=16)
    data = load_frames(cache, ["feat"])
    frame_head = cross_validate(data, "logreg", n_splits=3)
    assert frame_head.video["roc_auc"] < 0.7
    protocol = api.Protocol(folds=3)
    result = api.fit(cache, "gru", tmp_path / "gru.skops", protocol=protocol)
    assert result.report.video["roc_auc"] > 0.8
    assert result.report.video["roc_auc"] - frame_head.video["roc_auc"] > 0.2
    assert all(f.head_info["epochs"] >= 1 for f in result.report.folds)
    # every frame of a track carries the track's score
    scores = np.asarray(result.report.frame_scores["score"])
    video = np.asarray(result.report.frame_scores["video"])
    assert all(np.ptp(scores[video == v]) < 1e-6 for v in np.unique(video))
    # the file holds numbers, not a Keras object: loading rebuilds the same network, and the
    # same seed fits the same network again
    loaded = load_model(tmp_path / "gru.skops")
    assert isinstance(loaded.pipeline.named_steps["clf"].weights_[0], np.ndarray)
    params = dict(sequence=data.video, position=data.frame_index)
    refit = fit_final(data, "gru")[0]
    np.testing.assert_array_equal(fake_proba(loaded.pipeline, data.X, **params),
                                  fake_proba(refit, data.X, **params))
    evaluated, _ = api.evaluate(tmp_path / "gru.skops", cache)
    assert evaluated.video["roc_auc"] > 0.8


def test_gru_refuses_smote():
    with pytest.raises(FakeprobeError, match="sample weights only"):
        new_head("gru", smote=True)


def test_fit_gru_is_a_command():
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    result = CliRunner().invoke(app, ["fit-gru", "--help"])
    assert result.exit_code == 0 and "--search" in result.output


def test_gru_frame_scores_are_the_scores_of_each_prefix():
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from fakeprobe.classifiers.sequence import frame_scores

    rng = np.random.default_rng(0)
    n_seq, length = 8, 6
    sequence = np.repeat(np.arange(n_seq), length)
    position = np.tile(np.arange(length), n_seq)
    X = rng.normal(size=(len(sequence), 3)).astype(np.float32)
    y = (sequence % 2).astype(int)
    X[y == 1] += 0.5
    shuffle = rng.permutation(len(sequence))  # rows in any order
    sequence, position, X, y = sequence[shuffle], position[shuffle], X[shuffle], y[shuffle]
    gru = SequenceGRU(units=4, max_epochs=4, validation_fraction=0.0).fit(
        X, y, sequence=sequence, position=position)
    per_frame = gru.frame_proba(X, sequence=sequence, position=position)[:, 1]
    whole = gru.predict_proba(X, sequence=sequence, position=position)[:, 1]
    for s in range(n_seq):
        rows = np.flatnonzero(sequence == s)
        last = rows[np.argmax(position[rows])]
        # the last frame's score is the whole sequence's
        assert per_frame[last] == pytest.approx(whole[last], abs=1e-5)
        assert np.ptp(per_frame[rows]) > 1e-4  # the score moves along the sequence
        for k in rows:  # each frame's score is its prefix's, later frames unseen
            prefix = rows[position[rows] <= position[k]]
            alone = gru.predict_proba(X[prefix], sequence=sequence[prefix],
                                      position=position[prefix])[:, 1]
            assert per_frame[k] == pytest.approx(alone[0], abs=1e-5)
    # through a fitted pipeline: the scaled features, P(fake); none for a per-frame head
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", gru)])
    pipeline.named_steps["scale"].fit(X)
    got = frame_scores(pipeline, X, np.zeros(len(X), int), sequence, position)
    expected = gru.frame_proba(pipeline.named_steps["scale"].transform(X), sequence=sequence,
                               position=position)[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    logreg = new_head("logreg").fit(X, y)
    assert frame_scores(logreg, X, np.zeros(len(X), int), sequence, position) is None


def test_explain_and_predict_timelines_of_a_gru_model_are_per_frame(tmp_path, stub_config):
    from conftest import write_video
    from fakeprobe.classifiers.sequence import frame_scores
    from fakeprobe.evaluation.explain import explain_video
    from fakeprobe.pipeline.run import extract

    root = tmp_path / "data"
    for label, seed in (("real", 0), ("fake", 100)):
        (root / label).mkdir(parents=True)
        for k in range(4):
            write_video(root / label / f"v{k}.mp4", seed=seed + k, blobs=1)
    cache = tmp_path / "c.h5"
    extract([root], cache, stub_config)
    model_path = tmp_path / "gru.skops"
    protocol = api.Protocol(folds=2)
    api.fit(cache, "gru", model_path, protocol=protocol)
    model = load_model(model_path)
    evaluated, _ = api.evaluate(model_path, cache)
    video_score = {v["id"]: v["score"] for v in evaluated.video_scores}
    data = load_frames(cache, model.features)
    expected = frame_scores(model.pipeline, data.X, data.video, data.track, data.frame_index)
    vid = str(data.videos["id"][0])
    rows = np.flatnonzero(data.video == 0)
    rows = rows[np.argsort(data.frame_index[rows])]
    explained = explain_video(model_path, cache, vid, top_k=1)
    np.testing.assert_allclose(explained.timeline["score"], expected[rows], atol=1e-6)
    assert np.ptp(explained.timeline["score"]) > 0
    # one face track: the last frame's prefix score is the video's score
    assert explained.timeline["score"][-1] == pytest.approx(video_score[vid], abs=1e-5)
    assert explained.score == pytest.approx(video_score[vid], abs=1e-6)
    predicted = api.predict(model_path, [Path(data.videos["path"][0])])
    timeline = predicted.predictions[0].timeline
    assert [p["score"] for p in timeline] == pytest.approx(list(expected[rows]), abs=1e-5)
    assert timeline[-1]["score"] == pytest.approx(predicted.predictions[0].score, abs=1e-5)
