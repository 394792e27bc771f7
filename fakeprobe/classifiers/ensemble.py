"""Stacking: a logistic regression on the out-of-fold track scores of several heads.

:class:`StackedHeads` is one scikit-learn estimator. Its ``fit`` sees only the rows it is given
(inside the cross-validation: the training part of a fold), splits them again by group, fits
every member head on the inner training parts and scores the inner held-out parts: the mean
P(fake) of each member per face track (``sequence``), as a logit, is one column of the
meta-model's input, and the logistic meta-model learns on those out-of-fold scores. The members
are then refitted on all the rows. So the stack never sees the rows it will be scored on, and
its weights never see a member's score of a row that member trained on.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fakeprobe.classifiers.sequence import _binary_classes
from fakeprobe.errors import ConfigError

#: Member heads of ``--head stack``.
STACK_MEMBERS = ("logreg", "xgb", "svm")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _per_sequence_mean(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(owner, weights=values, minlength=n) / np.maximum(
        np.bincount(owner, minlength=n), 1)


class StackedHeads(ClassifierMixin, BaseEstimator):
    """Member heads (names in the head registry) stacked by a logistic regression fitted on
    their out-of-fold scores per face track; every row gets its track's probability."""

    #: fit and predict_proba take per-row ``sequence`` / ``position`` (see heads.predict_params)
    takes_sequences = True

    def __init__(self, members: tuple[str, ...] = STACK_MEMBERS, inner_folds: int = 3,
                 C: float = 1.0, random_state: int | None = 0) -> None:
        self.members = members
        self.inner_folds = inner_folds
        self.C = C
        self.random_state = random_state

    def _member(self, name: str):
        from fakeprobe.classifiers.heads import new_head

        return new_head(name, random_state=0 if self.random_state is None
                        else self.random_state)

    def _fit_member(self, name, X, y, weights, sequence, groups):
        """A member fitted on the rows with the stack's own sample weights (and its groups
        for the SVM's calibration folds)."""
        from fakeprobe.classifiers.heads import fit_params

        head = self._member(name)
        clf = head.named_steps["clf"]
        if clf.__class__.__name__ == "XGBClassifier" and clf.get_params()["n_jobs"] is None:
            clf.set_params(n_jobs=1)
        params = fit_params(head, y, sequence, groups)
        if "clf__sample_weight" in params:
            params["clf__sample_weight"] = weights
        return head.fit(X, y, **params)

    def _inner_splits(self, y, groups):
        counts = np.bincount(np.searchsorted(self.classes_, y), minlength=2)
        per_class = [len(np.unique(groups[y == c])) for c in self.classes_]
        if min(per_class) >= self.inner_folds:
            splitter = StratifiedGroupKFold(self.inner_folds, shuffle=True,
                                            random_state=self.random_state)
            splits = list(splitter.split(np.zeros(len(y)), y, groups))
        else:
            folds = max(2, min(self.inner_folds, int(counts.min())))
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
                          .split(np.zeros(len(y)), y))
        return [(tr, te) for tr, te in splits if len(np.unique(y[tr])) == 2]

    def fit(self, X, y, sample_weight=None, sequence=None, position=None, groups=None):
        X, y = validate_data(self, X, y)
        self.classes_ = _binary_classes(y)
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                       ensure_non_negative=True)
        if not weights.sum() > 0:
            raise ConfigError("Sample weights must contain at least one non-zero number.")
        sequence = np.arange(len(y)) if sequence is None else np.asarray(sequence)
        _, owner = np.unique(sequence, return_inverse=True)
        owner = owner.ravel()
        n_seq = owner.max() + 1
        groups = owner if groups is None else np.asarray(groups)
        positive = (y == self.classes_[1]).astype(float)
        oof = np.full((n_seq, len(self.members)), np.nan)
        for tr, te in self._inner_splits(y, groups):
            for j, name in enumerate(self.members):
                model = self._fit_member(name, X[tr], y[tr], weights[tr], owner[tr],
                                         groups[tr])
                p = model.predict_proba(X[te])[:, list(model.classes_).index(self.classes_[1])]
                seqs = np.unique(owner[te])
                oof[seqs, j] = _per_sequence_mean(p, owner[te], n_seq)[seqs]
        scored = ~np.isnan(oof).any(axis=1)
        target = np.zeros(n_seq)
        np.maximum.at(target, owner, positive)
        seq_weight = np.bincount(owner, weights=weights, minlength=n_seq)
        if len(np.unique(target[scored])) < 2:
            raise ConfigError("too few rows of each class to stack: every inner fold needs "
                              "both classes")
        self.meta_ = LogisticRegression(C=self.C, max_iter=1000)
        self.meta_.fit(_logit(oof[scored]), target[scored], sample_weight=seq_weight[scored])
        self.members_ = [self._fit_member(name, X, y, weights, owner, groups)
                         for name in self.members]
        #: Weight of each member's logit in the meta-model.
        self.member_weights_ = dict(zip(self.members, self.meta_.coef_[0].tolist()))
        return self

    def member_proba(self, X, sequence=None, position=None) -> np.ndarray:
        """P(fake) of every member, per row (its track's mean), one column per member."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        sequence = np.arange(len(X)) if sequence is None else np.asarray(sequence)
        _, owner = np.unique(sequence, return_inverse=True)
        owner = owner.ravel()
        n_seq = owner.max() + 1 if len(owner) else 0
        columns = []
        for model in self.members_:
            p = model.predict_proba(X)[:, list(model.classes_).index(self.classes_[1])]
            columns.append(_per_sequence_mean(p, owner, n_seq)[owner])
        return np.column_stack(columns)

    def predict_proba(self, X, sequence=None, position=None):
        check_is_fitted(self)
        fake = self.meta_.predict_proba(_logit(self.member_proba(X, sequence)))[:, 1]
        return np.column_stack([1.0 - fake, fake])

    def predict(self, X, sequence=None, position=None):
        proba = self.predict_proba(X, sequence=sequence)
        return self.classes_[(proba[:, 1] >= 0.5).astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


__all__ = ["STACK_MEMBERS", "StackedHeads"]
