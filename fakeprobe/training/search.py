"""Hyperparameter search inside the training part of a split: a grid, random draws or
Optuna's TPE sampler, each scored by frame ROC-AUC in a grouped inner cross-validation."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from fakeprobe.classifiers.data import FrameData
from fakeprobe.classifiers.heads import SEARCH_SPACES, fit_params
from fakeprobe.errors import ConfigError, FakeprobeError, MissingDependency

#: Hyperparameter searches (``--search``): every one runs inside the training part only.
SEARCH_MODES = ("grid", "random", "bayes")
#: Folds of the inner cross-validation that picks thresholds and hyperparameters.
INNER_FOLDS = 3


def check_search(search: str | None) -> None:
    """:class:`ConfigError` unless ``search`` is ``None`` (no search) or one of
    :data:`SEARCH_MODES`."""
    if search is not None and search not in SEARCH_MODES:
        raise ConfigError(f"unknown hyperparameter search {search!r}; choose one of: "
                          f"{', '.join(SEARCH_MODES)}")


def smallest_class(labels: np.ndarray) -> int:
    """Items in the rarer of the two classes (labels 0/1; unlabelled ignored)."""
    counts = np.bincount(labels[labels >= 0], minlength=2)
    return int(counts.min())


def search_params(head: Pipeline, name: str, data: FrameData, rows: np.ndarray, mode: str,
                  n_iter: int, random_state: int) -> tuple[dict[str, Any], int]:
    """Best parameters of ``head`` by frame ROC-AUC in a grouped CV of the training rows, and
    the number of candidates tried (``mode``: one of :data:`SEARCH_MODES`, else
    :class:`ConfigError`)."""
    check_search(mode)
    space = SEARCH_SPACES.get(name)
    if not space:
        return {}, 0
    groups = data.groups[rows]
    video_labels = data.video_labels[np.unique(data.video[rows])]
    if len(np.unique(groups)) < INNER_FOLDS or smallest_class(video_labels) < INNER_FOLDS:
        return {}, 0
    X, y, video = data.X[rows], data.y[rows], data.video[rows]
    cv = list(StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=random_state)
              .split(X, y, groups))
    params = fit_params(head, y, video, groups, data.track[rows], data.frame_index[rows])
    if mode == "bayes":
        return _bayes_search(head, space, X, y, cv, params, n_iter, random_state)
    if mode == "grid":
        searcher = GridSearchCV(head, space, scoring="roc_auc", cv=cv, n_jobs=1)
    else:
        searcher = RandomizedSearchCV(head, space, n_iter=n_iter, scoring="roc_auc", cv=cv,
                                      n_jobs=1, random_state=random_state)
    searcher.fit(X, y, **params)
    return dict(searcher.best_params_), len(searcher.cv_results_["params"])


def search_distributions(space: dict[str, list]) -> dict[str, Any]:
    """Optuna distributions spanning a grid of :data:`SEARCH_SPACES`: a list of integers
    becomes an integer range, a list of positive floats a (log-uniform when it spans a factor
    of 10 or more) float range, anything else (strings, mixed) a categorical choice."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    out: dict[str, Any] = {}
    for key, values in space.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(values) and all(isinstance(v, int) for v in values):
            out[key] = IntDistribution(min(values), max(values))
        elif len(numbers) == len(values) and min(values) > 0:
            low, high = float(min(values)), float(max(values))
            out[key] = FloatDistribution(low, high, log=high / low >= 10)
        else:
            out[key] = CategoricalDistribution(list(values))
    return out


def _bayes_search(head: Pipeline, space: dict[str, list], X: np.ndarray, y: np.ndarray,
                  cv: list, params: dict, n_trials: int, random_state: int
                  ) -> tuple[dict[str, Any], int]:
    """Optuna's TPE sampler (seeded) over :func:`search_distributions`, each trial scored by
    the mean frame ROC-AUC of the grouped inner folds ``cv`` of the training rows."""
    try:
        import optuna
    except ImportError:
        raise MissingDependency('--search bayes needs Optuna (pip install "fakeprobe[bayes]")'
                                ) from None
    from sklearn.model_selection import cross_val_score

    distributions = search_distributions(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=random_state,
                                         n_startup_trials=min(5, max(1, n_trials // 2)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n_trials):
        trial = study.ask(distributions)
        model = clone(head).set_params(**trial.params)
        scores = cross_val_score(model, X, y, scoring="roc_auc", cv=cv, n_jobs=1,
                                 params=params, error_score=np.nan)
        value = float(np.mean(scores))
        if np.isnan(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise FakeprobeError("--search bayes: every trial failed to fit in the inner folds")
    return dict(study.best_params), len(study.trials)
