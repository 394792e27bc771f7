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
