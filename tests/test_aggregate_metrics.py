"""Aggregation, smoothing and metrics on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fakeprobe.classifiers.aggregate import Aggregation, smooth
from fakeprobe.classifiers.metrics import binary_metrics, equal_error_rate, youden_threshold


P = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.9, 0.1, 0.5])
LOGIT_MEAN = 1 / (1 + np.exp(-np.mean(np.log(P / (1 - P)))))


@pytest.mark.parametrize("method,expected", [
    ("mean", 0.5), ("median", 0.5), ("topk", 0.9), ("logit-mean", LOGIT_MEAN),
])
def test_aggregators(method, expected):
    assert Aggregation(method).track_score(P) == pytest.approx(expected)


def test_confident_rule():
    agg = Aggregation("confident")
    # 12 of 32 frames above 0.8 is not more than 32 / 2.5 = 12.8: the plain mean
    p = np.array([0.9] * 12 + [0.5] * 20)
    assert agg.track_score(p) == pytest.approx(p.mean())
    # 13 of 32 above 0.8: the mean of those
    p = np.array([0.95] * 13 + [0.5] * 19)
    assert agg.track_score(p) == pytest.approx(0.95)
    # 30 of 32 below 0.2 (> 90%): the mean of those
    p = np.array([0.1] * 30 + [0.6] * 2)
    assert agg.track_score(p) == pytest.approx(0.1)


def test_smoothing_known_answers():
    p = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(smooth(p, "moving", window=3), [0, 1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(smooth(p, "median", window=3), [0, 0, 0, 0, 0])
    np.testing.assert_allclose(smooth(p, "exponential", alpha=0.5), [0, 0, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(smooth(p, "none"), p)
    with pytest.raises(ValueError, match="unknown smoothing"):
        smooth(p, "gaussian")


def test_smoothing_removes_a_one_frame_spike_before_topk():
    p = np.array([0.1] * 10 + [0.99] + [0.1] * 10)
    assert Aggregation("topk").track_score(p) > 0.2
    assert Aggregation("topk", smoothing="median", window=3).track_score(p) == pytest.approx(0.1)


def test_video_scores_use_the_most_fake_track_and_leave_faceless_videos_unscored():
    scores = np.array([0.2, 0.2, 0.9, 0.8, 0.1])
    video = np.array([0, 0, 0, 0, 2])
    track = np.array([0, 0, 1, 1, 0])
    frame = np.array([0, 1, 0, 1, 0])
    out = Aggregation().video_scores(scores, video, frame, track, n_videos=3)
    assert out[0] == pytest.approx(0.85) and np.isnan(out[1]) and out[2] == pytest.approx(0.1)


def test_frames_are_ordered_in_time_before_smoothing():
    scores = np.array([1.0, 0.0, 0.0])
    frame = np.array([2, 0, 1])  # the spike is the last frame in time
    agg = Aggregation("mean", smoothing="exponential", alpha=0.5)
    out = agg.video_scores(scores, np.zeros(3, int), frame, np.zeros(3, int), 1)
    assert out[0] == pytest.approx(np.mean([0.0, 0.0, 0.5]))


def test_binary_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, s, threshold=0.5)
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, s))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert m["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["fpr"] == pytest.approx(fp / (fp + tn)) and m["fnr"] == pytest.approx(fn / (fn + tp))


def test_log_loss_is_clipped_and_single_class_gives_none():
    m = binary_metrics(np.array([1, 0]), np.array([0.0, 1.0]))
    assert m["log_loss"] == pytest.approx(-np.log(1e-6), rel=1e-3)
    one = binary_metrics(np.array([1, 1]), np.array([0.7, 0.8]))
    assert one["roc_auc"] is None and one["eer"] is None and one["recall"] == 1.0
    assert one["specificity"] is None


def test_eer_and_youden_known_answers():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    assert equal_error_rate(y, perfect)[0] == pytest.approx(0.0)
    assert 0.4 < youden_threshold(y, perfect) <= 0.6
    swapped = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])  # one of each crosses
    assert equal_error_rate(y, swapped)[0] == pytest.approx(0.25)
    assert equal_error_rate(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_metrics_of_nothing_are_empty_not_an_error():
    m = binary_metrics(np.zeros(0, int), np.zeros(0))
    assert m["n"] == 0 and m["accuracy"] is None and m["roc_auc"] is None
    assert m["confusion"] == {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
