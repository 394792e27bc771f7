"""Stacking heads: a logistic regression on nested out-of-fold track scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from fakeprobe import app as api
from fakeprobe.classifiers import ensemble
from fakeprobe.classifiers.data import load_frames
from fakeprobe.classifiers.ensemble import StackedHeads
from fakeprobe.classifiers.heads import new_head, predict_params
from fakeprobe.classifiers.model import load_model
from fakeprobe.errors import FakeprobeError
from fakeprobe.training.cv import cross_validate, fake_proba, fit_final, grouped_folds
from tests.test_heads import make_cache


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data":
            "the inner folds are drawn from the rows, so repeating a row changes them"}


@parametrize_with_checks([StackedHeads(members=("logreg",))],
                         expected_failed_checks=_expected_failures)
def test_stacked_heads_follow_scikit_learn(estimator, check):
    check(estimator)


@pytest.fixture()
def frames(tmp_path):
    """The synthetic cache of test_heads (10 groups: 1 real and 2 shifted fakes each)."""
    return load_frames(make_cache(tmp_path / "syn.h5", n_groups=10), ["feat"])


def test_the_stack_never_sees_its_test_fold(frames, monkeypatch):
    seen = []
    original = StackedHeads._fit_member

    def spy(self, name, X, y, weights, sequence, groups):
        seen.append({tuple(row) for row in X})
        return original(self, name, X, y, weights, sequence, groups)

    monkeypatch.setattr(ensemble.StackedHeads, "_fit_member", spy)
    folds = grouped_folds(frames, 3)
    report = cross_validate(frames, "stack", folds=folds)
    assert report.video["roc_auc"] > 0.8
    # the report shows each fold's weight of every member
    assert all(set(f.head_info["member_weights"]) == {"logreg", "xgb", "svm"}
               for f in report.folds)
    all_test = [{tuple(r) for r in frames.X[np.isin(frames.video, te)]} for _, te in folds]
    all_train = [{tuple(r) for r in frames.X[np.isin(frames.video, tr)]} for tr, _ in folds]
    assert seen
    # every member fit (inner folds, the threshold's CV, final refits) used training rows of
    # one outer fold and no row of that fold's test part
    for rows in seen:
        assert any(rows <= train and not rows & test for train, test in zip(all_train, all_test))
    # the members' out-of-fold fits use strictly fewer rows than the refits on all of them
    assert min(len(r) for r in seen) < max(len(r) for r in seen)


def test_stack_weights_the_informative_member(frames):
    stack = new_head("stack", members=("logreg", "xgb"))
    stack.fit(frames.X, frames.y, clf__sample_weight=np.ones(len(frames.y)),
              **{f"clf__{k}": v for k, v in predict_params(stack, frames.video).items()},
              clf__groups=frames.groups)
    weights = stack.named_steps["clf"].member_weights_
    assert set(weights) == {"logreg", "xgb"} and max(weights.values()) > 0
    members = stack.named_steps["clf"].member_proba(frames.X, frames.video)
    assert members.shape == (len(frames.y), 2)
    # every row of a video carries the video's score
    proba = fake_proba(stack, frames.X, **predict_params(stack, frames.video))
    for v in np.unique(frames.video):
        assert np.ptp(proba[frames.video == v]) < 1e-9


def test_a_saved_stack_gives_the_same_probabilities(tmp_path, frames):
    cache = make_cache(tmp_path / "s.h5", n_groups=8)
    data = load_frames(cache, ["feat"])
    api.fit(cache, "stack", tmp_path / "stack.skops", protocol=api.Protocol(folds=2))
    loaded = load_model(tmp_path / "stack.skops")
    refit = fit_final(data, "stack")[0]
    params = predict_params(refit, data.video, data.track, data.frame_index)
    np.testing.assert_array_equal(fake_proba(loaded.pipeline, data.X, **params),
                                  fake_proba(refit, data.X, **params))


def test_stack_refuses_smote():
    with pytest.raises(FakeprobeError, match="sample weights only"):
        new_head("stack", smote=True)
