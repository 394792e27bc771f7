"""Bayesian hyperparameter search (Optuna's TPE) inside the training folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fakeprobe.app import Protocol
from fakeprobe.classifiers.data import load_frames
from fakeprobe.classifiers.heads import SEARCH_SPACES
from fakeprobe.cli import app
from fakeprobe.errors import FakeprobeError
from fakeprobe.training import search as training
from fakeprobe.training.cv import cross_validate, grouped_folds
from fakeprobe.training.search import search_distributions
from tests.test_heads import make_cache

pytest.importorskip("optuna")


@pytest.fixture()
def frames(tmp_path):
    """The synthetic cache of test_heads (12 groups: 1 real and 2 shifted fakes each)."""
    return load_frames(make_cache(tmp_path / "syn.h5", n_groups=12), ["feat"])


def test_search_spaces_become_distributions():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    logreg = search_distributions(SEARCH_SPACES["logreg"])["clf__C"]
    assert isinstance(logreg, FloatDistribution) and logreg.log
    assert (logreg.low, logreg.high) == (0.001, 10.0)
    xgb = search_distributions(SEARCH_SPACES["xgb"])
    assert isinstance(xgb["clf__max_depth"], IntDistribution)
    assert (xgb["clf__max_depth"].low, xgb["clf__max_depth"].high) == (2, 6)
    assert not xgb["clf__learning_rate"].log  # 0.05..0.1 spans less than a factor of 10
    gamma = search_distributions(SEARCH_SPACES["svm"])["clf__gamma"]
    assert isinstance(gamma, CategoricalDistribution) and "scale" in gamma.choices


def test_bayes_search_is_reproducible_with_a_seed(frames):
    runs = [cross_validate(frames, "logreg", n_splits=3, search="bayes", n_iter=4,
                           random_state=seed) for seed in (0, 0, 1)]
    params = [[f.params for f in r.folds] for r in runs]
    assert params[0] == params[1]
    assert params[0] != params[2]  # the seed drives the sampler (and the folds)
    assert all(f.search_trials == 4 for f in runs[0].folds)
    assert all(0.001 <= f.params["clf__C"] <= 10 for f in runs[0].folds)
    assert runs[0].video["roc_auc"] > 0.8


def test_bayes_search_never_sees_the_test_fold(frames, monkeypatch):
    seen = []
    original = training._bayes_search

    def spy(head, space, X, y, cv, params, n_trials, random_state):
        seen.append({tuple(row) for row in X})
        return original(head, space, X, y, cv, params, n_trials, random_state)

    monkeypatch.setattr(training, "_bayes_search", spy)
    folds = grouped_folds(frames, 3)
    cross_validate(frames, "logreg", folds=folds, search="bayes", n_iter=2)
    assert len(seen) == len(folds)
    for rows, (train, test) in zip(seen, folds):
        test_rows = {tuple(r) for r in frames.X[np.isin(frames.video, test)]}
        train_rows = {tuple(r) for r in frames.X[np.isin(frames.video, train)]}
        assert rows == train_rows and not rows & test_rows


def test_a_bad_search_is_refused():
    with pytest.raises(FakeprobeError, match="search must be one of grid, random, bayes"):
        Protocol(search="annealing")
    with pytest.raises(FakeprobeError, match="n_iter"):
        Protocol(search="bayes", n_iter=0)


def test_compare_runs_a_bayes_search_from_the_command_line(tmp_path):
    cache = make_cache(tmp_path / "syn.h5", n_groups=9)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(cache), "--head", "logreg", "--cv", "3",
                                 "--search", "bayes", "--n-iter", "3", "--json"])
    assert result.exit_code == 0, result.output
    folds = json.loads(result.output)["reports"][0]["folds"]
    assert [f["search_trials"] for f in folds] == [3, 3, 3]
    assert all("clf__C" in f["params"] for f in folds)
    bad = runner.invoke(app, ["compare", str(cache), "--search", "annealing"])
    assert bad.exit_code != 0 and "grid, random, bayes" in bad.output


def test_the_final_model_takes_the_first_folds_params_when_every_fold_differs(tmp_path):
    from fakeprobe import app as api

    cache = make_cache(tmp_path / "syn.h5", n_groups=9)
    result = api.fit(cache, "logreg", None,
                     protocol=Protocol(folds=3, search="bayes", n_iter=3))
    chosen = [f.params for f in result.report.folds]
    assert len({tuple(sorted(c.items())) for c in chosen}) == 3  # continuous C: all differ
    assert result.provenance["params"] == chosen[0]
