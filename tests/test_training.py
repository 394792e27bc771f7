"""The training loop's refusals and explicit fallbacks: an unknown search is an error, and a
threshold the training items cannot choose is recorded with its reason."""

from __future__ import annotations

import pytest

from fakeprobe.classifiers.data import load_frames
from fakeprobe.errors import ConfigError, FakeprobeError
from fakeprobe.training.cv import FALLBACK_THRESHOLD, cross_validate, grouped_folds, train_test
from fakeprobe.training.search import INNER_FOLDS, SEARCH_MODES
from tests.test_heads import make_cache


def frames(tmp_path, n_groups: int, seed: int = 0, dataset: str = "d"):
    """The synthetic cache of test_heads: per group 1 real and 2 shifted fakes."""
    path = make_cache(tmp_path / f"{dataset}-{n_groups}.h5", n_groups=n_groups, seed=seed,
                      dataset=dataset)
    return load_frames(path, ["feat"])


@pytest.mark.parametrize("search", ["randomm", "Grid", ""])
def test_an_unknown_search_is_a_config_error_before_anything_is_fitted(tmp_path, search):
    data = frames(tmp_path, 6)
    with pytest.raises(ConfigError, match="unknown hyperparameter search") as caught:
        cross_validate(data, "logreg", n_splits=3, search=search)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FakeprobeError)
    for mode in SEARCH_MODES:
        assert mode in str(caught.value)


def test_train_test_refuses_an_unknown_search_too(tmp_path):
    train, test = frames(tmp_path, 6), frames(tmp_path, 6, seed=1, dataset="e")
    with pytest.raises(ConfigError):
        train_test(train, test, "logreg", search="bayesian")


def test_a_threshold_the_training_part_cannot_choose_is_recorded_with_its_reason(tmp_path):
    # 3 groups in 3 folds: each training part holds 2 groups, too few for the inner split
    data = frames(tmp_path, INNER_FOLDS)
    report = cross_validate(data, "logreg", n_splits=3)
    assert len(report.folds) == 3
    for fold in report.folds:
        assert fold.threshold == FALLBACK_THRESHOLD
        assert "not chosen" in fold.threshold_note and "2 group(s)" in fold.threshold_note
    assert len(report.notes) == 3 and report.notes[0].startswith("fold 0: threshold 0.5")
    saved = report.to_dict()
    assert saved["notes"] == report.notes
    assert saved["folds"][0]["threshold_note"] == report.folds[0].threshold_note


def test_a_chosen_threshold_leaves_no_note(tmp_path):
    data = frames(tmp_path, 12)
    report = cross_validate(data, "logreg", folds=grouped_folds(data, 3, 0))
    assert report.notes == []
    assert all(fold.threshold_note == "" for fold in report.folds)
    assert any(fold.threshold != FALLBACK_THRESHOLD for fold in report.folds)
