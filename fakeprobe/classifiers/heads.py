"""Classical heads as scikit-learn pipelines, in a registry keyed by name.

Every head is ``Pipeline([("scale", StandardScaler()), ("clf", estimator)])`` so that
standardisation is learnt inside each training fold. Class imbalance and uneven frame counts are
handled by sample weights (see :func:`balanced_weights`) passed as ``clf__sample_weight``, the
same way for every head.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fakeprobe.errors import ConfigError, MissingDependency
from fakeprobe.registry import Registry

#: Above this many training frames the SVM head switches from an exact RBF kernel SVM (memory
#: and time grow with the square of the frames) to a Nystroem kernel approximation + linear SVM.
#: benchmarks/heads.py: the exact SVM took 19 s to fit 10,000 x 128-d frames (calibration folds
#: included) and minutes at 1280-d; the approximation fits 100,000 x 128-d frames in 14 s.
SVM_EXACT_MAX_FRAMES = 5_000


def _binary_classes(y: np.ndarray) -> np.ndarray:
    """The two classes of ``y``, or the ValueError scikit-learn expects of binary estimators."""
    kind = type_of_target(y, input_name="y", raise_unknown=True)
    if kind != "binary":
        raise ConfigError(f"Only binary classification is supported. The type of the target "
                          f"is {kind}.")
    return unique_labels(y)


class NystroemSVC(ClassifierMixin, BaseEstimator):
    """RBF kernel approximated by Nystroem features, then a linear SVM (scales linearly)."""

    def __init__(self, C: float = 1.0, gamma: float | None = None, n_components: int = 300,
                 random_state: int | None = 0) -> None:
        self.C = C
        self.gamma = gamma
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        X, y = validate_data(self, X, y)
        return self.fit_mapped(self.fit_map(X), y, sample_weight)

    def fit_map(self, X) -> np.ndarray:
        """Fit the Nystroem map (no labels) and return the mapped ``X``."""
        X = validate_data(self, X)
        gamma = self.gamma if self.gamma is not None else 1.0 / (X.shape[1] * X.var() or 1.0)
        self.map_ = Nystroem(gamma=gamma, n_components=min(self.n_components, len(X)),
                             random_state=self.random_state).fit(X)
        return self.map_.transform(X)

    def fit_mapped(self, mapped, y, sample_weight=None):
        """Fit the linear SVM on rows already mapped by ``map_`` (set by :meth:`fit_map`,
        or shared with another instance fitted on the same inputs)."""
        self.classes_ = _binary_classes(y)
        self.n_features_in_ = self.map_.components_.shape[1]
        self.svm_ = LinearSVC(C=self.C, dual="auto", max_iter=5000,
                              random_state=self.random_state)
        self.svm_.fit(mapped, y, sample_weight=sample_weight)
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.svm_.decision_function(self.map_.transform(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def predict(self, X):
        check_is_fitted(self)
        return self.svm_.predict(self.map_.transform(validate_data(self, X, reset=False)))


class AutoSVC(ClassifierMixin, BaseEstimator):
    """An SVM with calibrated probabilities that picks its kernel by the size of the data.

    Up to ``exact_max`` frames: ``SVC(kernel="rbf")``; above: :class:`NystroemSVC`. Either way
    probabilities come from Platt scaling fitted on decision values of frames the scoring SVM
    did not see; when ``groups`` are given the calibration folds are grouped, so frames of one
    video never calibrate their own scores. (``SVC(probability=True)`` is deprecated and
    calibrates on ungrouped folds.)

    ``calibration``: ``"cv"`` fits an SVM per fold of ``calibration_folds`` for out-of-fold
    scores of every frame, Platt-scales them, then fits one more SVM on all frames
    (``CalibratedClassifierCV(ensemble=False)``: ``calibration_folds`` + 1 fits, each mapping
    the frames through its own Nystroem map). ``"crossfit"`` (Nystroem kernel only) keeps the
    fold SVMs instead of refitting on all frames: each is Platt-scaled on the fold it did not
    see and the probabilities are their mean (scikit-learn's ``ensemble=True``), with one
    kernel map fitted and applied once for all of them: ``calibration_folds`` fits of
    ``(k - 1) / k`` of the frames and no refit. ``"auto"`` (the default) is ``"crossfit"`` for
    the Nystroem kernel and ``"cv"`` for the exact one, whose fits are cheap. On 100,000 x 128-d
    frames ``"crossfit"`` fits about 2x faster than ``"cv"`` with the same log loss and
    calibration error (``benchmarks/speed.py``).
    """

    def __init__(self, C: float = 1.0, gamma: str | float = "scale", exact_max: int =
                 SVM_EXACT_MAX_FRAMES, calibration_folds: int = 3, calibration: str = "auto",
                 random_state: int | None = 0) -> None:
        self.C = C
        self.gamma = gamma
        self.exact_max = exact_max
        self.calibration_folds = calibration_folds
        self.calibration = calibration
        self.random_state = random_state

    def _base(self, n_samples: int) -> BaseEstimator:
        if n_samples <= self.exact_max:
            return SVC(kernel="rbf", C=self.C, gamma=self.gamma, random_state=self.random_state)
        gamma = None if isinstance(self.gamma, str) else self.gamma
        return NystroemSVC(C=self.C, gamma=gamma, random_state=self.random_state)

    def fit(self, X, y, sample_weight=None, groups=None):
        X, y = validate_data(self, X, y)
        self.classes_ = _binary_classes(y)
        self.kernel_ = "rbf" if len(X) <= self.exact_max else "nystroem"
        folds = self.calibration_folds
        cv = None
        if groups is not None and len(np.unique(groups)) >= folds:
            cv = list(GroupKFold(n_splits=folds).split(X, y, groups))
            # Platt scaling needs out-of-fold scores for every frame (the folds must be a
            # partition) and both classes in each training part; with too few groups per
            # class, the calibration folds are stratified instead
            if not all(len(np.unique(y[tr])) == 2 for tr, _ in cv):
                cv = None
        if cv is None:
            counts = np.bincount(np.searchsorted(self.classes_, y))
            folds = max(2, min(folds, int(counts.min())))
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        if self.calibration not in ("auto", "cv", "crossfit"):
            raise ConfigError(f"calibration must be 'auto', 'cv' or 'crossfit', not "
                              f"{self.calibration!r}")
        if self.calibration == "crossfit" or (
                self.calibration == "auto" and self.kernel_ == "nystroem"):
            self._fit_crossfit(X, y, sample_weight, cv)
            return self
        self.calibrated_ = CalibratedClassifierCV(self._base(len(X)), method="sigmoid", cv=cv,
                                                  ensemble=False)
        self.calibrated_.fit(X, y, sample_weight=sample_weight)
        return self

    def _fit_crossfit(self, X, y, sample_weight, cv) -> None:
        """One SVM per calibration fold, fitted on the other folds and Platt-scaled on its
        own held-out fold; all share one kernel map (Nystroem, fitted without labels on every
        frame, applied once). Probabilities are the members' mean."""
        from sklearn.base import clone
        from sklearn.calibration import _SigmoidCalibration

        splits = cv if isinstance(cv, list) else list(cv.split(X, y))
        base = self._base(len(X))
        weights = _check_sample_weight(sample_weight, X)
        positive = (y == self.classes_[1]).astype(int)
        if not isinstance(base, NystroemSVC):
            raise ConfigError("calibration='crossfit' needs the Nystroem kernel (more frames "
                              "than exact_max)")
        mapped = base.fit_map(X)
        self.members_ = []
        for train, held in splits:
            member = clone(base)
            member.map_ = base.map_
            member.fit_mapped(mapped[train], y[train], weights[train])
            platt = _SigmoidCalibration().fit(member.svm_.decision_function(mapped[held]),
                                              positive[held], weights[held])
            self.members_.append((member.svm_, platt))
        self.map_ = base.map_

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        if hasattr(self, "members_"):
            mapped = self.map_.transform(X)
            fake = np.mean([platt.predict(svm.decision_function(mapped))
                            for svm, platt in self.members_], axis=0)
            return np.column_stack([1.0 - fake, fake])
        return self.calibrated_.predict_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, X):
        """Calibrated log-odds of ``classes_[1]`` (positive exactly when it is predicted)."""
        p = np.clip(self.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _xgb(random_state: int = 0, device: str = "auto", **params):
    from xgboost import XGBClassifier

    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    # Embeddings are wide (128-1280 columns) and folds short (thousands of frames): histogram
    # building over the columns dominates, so 64 bins and 30% of the columns per tree (4x
    # faster than 256 bins and half the columns: 11.4 s -> 2.7 s on 1,800 x 1,280 frames here).
    # n_jobs=None is settled in fit_head by the size of the data (see XGB_THREADS_FROM_ROWS).
    defaults = dict(n_estimators=200, max_depth=4, learning_rate=0.1, subsample=0.8,
                    colsample_bytree=0.3, max_bin=64, min_child_weight=1.0,
                    tree_method="hist", eval_metric="logloss", n_jobs=None)
    defaults.update(params)
    return XGBClassifier(random_state=random_state, device=device, **defaults)


def _cuda_available() -> bool:
    """True when xgboost was built with CUDA and a GPU answers (never on xgboost-cpu)."""
    import subprocess

    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=5
                              ).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


#: XGBoost uses one thread below this many frames and every core above: on small folds its
#: thread start-up and spin-waits cost more than they save (up to 20x on 2 busy cores).
XGB_THREADS_FROM_ROWS = 20_000

HEADS: Registry[Pipeline] = Registry("head")

#: Parameter grids for ``--search`` (keys are Pipeline parameter names).
SEARCH_SPACES: dict[str, dict[str, list]] = {
    "logreg": {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0]},
    "svm": {"clf__C": [0.1, 1.0, 10.0], "clf__gamma": ["scale", 0.001, 0.01]},
    "xgb": {"clf__max_depth": [2, 4, 6], "clf__n_estimators": [150, 300],
            "clf__learning_rate": [0.05, 0.1]},
}


def _pipeline(estimator, smote: bool = False, random_state: int = 0) -> Pipeline:
    """Scaler + estimator; with ``smote``, synthetic minority frames are added after scaling
    (imbalanced-learn's SMOTE, inside each training fold only) instead of sample weights."""
    if not smote:
        return Pipeline([("scale", StandardScaler()), ("clf", estimator)])
    try:
        from imblearn.over_sampling import SMOTE
        from imblearn.pipeline import Pipeline as SamplerPipeline
    except ImportError:
        raise MissingDependency('SMOTE needs imbalanced-learn (pip install "fakeprobe[smote]")'
                                ) from None
    return SamplerPipeline([("scale", StandardScaler()),
                            ("smote", SMOTE(random_state=random_state)), ("clf", estimator)])


#: Inverse L2 strength of the logistic head. Thousands of frames come from a few dozen videos
#: (and people): strong regularisation keeps the head from memorising them, and lbfgs converges
#: in about 50 iterations on 1280-d features instead of 100+.
LOGREG_C = 0.01


@HEADS.register("logreg", description="L2 logistic regression (lbfgs)")
def make_logreg(random_state: int = 0, smote: bool = False, **params) -> Pipeline:
    return _pipeline(LogisticRegression(max_iter=5000, random_state=random_state,
                                        **{"C": LOGREG_C, **params}), smote, random_state)


@HEADS.register("svm", description="RBF SVM with grouped Platt calibration; Nystroem + "
                f"linear SVM above {SVM_EXACT_MAX_FRAMES} frames")
def make_svm(random_state: int = 0, smote: bool = False, **params) -> Pipeline:
    return _pipeline(AutoSVC(random_state=random_state, **params), smote, random_state)


@HEADS.register("xgb", requires=("xgboost",), hint='pip install "xgboost-cpu>=2"',
                description="gradient-boosted trees (XGBClassifier, hist; CUDA when present)")
def make_xgb(random_state: int = 0, smote: bool = False, **params) -> Pipeline:
    return _pipeline(_xgb(random_state=random_state, **params), smote, random_state)


@HEADS.register("gru", requires=("tensorflow",), hint='pip install "tensorflow-cpu>=2.16"',
                description="temporal: a small Keras GRU over each face track's frame "
                "sequence (every frame gets its track's score)")
def make_gru(random_state: int = 0, smote: bool = False, **params) -> Pipeline:
    from fakeprobe.classifiers.sequence import SequenceGRU

    if smote:
        from fakeprobe.errors import FakeprobeError

        raise FakeprobeError("--smote makes frames, not sequences: the gru head balances by "
                             "sample weights only")
    return _pipeline(SequenceGRU(random_state=random_state, **params))


@HEADS.register("stack", requires=("xgboost",), hint='pip install "xgboost-cpu>=2"',
                description="stacking: a logistic regression on the out-of-fold track scores "
                "of logreg, xgb and svm, nested inside the training rows")
def make_stack(random_state: int = 0, smote: bool = False, **params) -> Pipeline:
    from fakeprobe.classifiers.ensemble import StackedHeads

    if smote:
        from fakeprobe.errors import FakeprobeError

        raise FakeprobeError("--smote makes frames without a track: the stack head balances "
                             "by sample weights only")
    # every member standardises inside its own pipeline
    return Pipeline([("scale", "passthrough"),
                     ("clf", StackedHeads(random_state=random_state, **params))])


def _is_sequence_head(head: Pipeline) -> bool:
    """Whether the head's estimator takes per-row sequences (temporal head, stack)."""
    return bool(getattr(head.named_steps["clf"], "takes_sequences", False))


def predict_params(head: Pipeline, video: np.ndarray | None = None,
                   track: np.ndarray | None = None, frame_index: np.ndarray | None = None
                   ) -> dict[str, np.ndarray]:
    """The per-row arguments of ``head.predict_proba``: a temporal head's sequence (one per
    video and face track) and frame order; nothing for the others."""
    if not _is_sequence_head(head) or video is None:
        return {}
    from fakeprobe.classifiers.sequence import sequence_ids

    track = np.zeros(len(video), int) if track is None else track
    params = {"sequence": sequence_ids(video, track)}
    if frame_index is not None:
        params["position"] = np.asarray(frame_index)
    return params


def balanced_weights(y: np.ndarray, video: np.ndarray) -> np.ndarray:
    """Sample weights so that every video counts once and each class counts half.

    A video of 32 frames does not outweigh one of 8, and 44 fakes do not outweigh 13 reals.
    Weights average to 1.
    """
    y = np.asarray(y)
    _, inverse, counts = np.unique(video, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    for label in np.unique(y):
        mask = y == label
        w[mask] /= w[mask].sum()
    return w * len(w) / w.sum()


def fit_params(head: Pipeline, y: np.ndarray, video: np.ndarray,
               groups: np.ndarray | None = None, track: np.ndarray | None = None,
               frame_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The per-row fit parameters of a head: :func:`balanced_weights`, the groups of the
    SVM's calibration folds and of the temporal head's early-stopping split, and the temporal
    head's sequences (:func:`predict_params`). A SMOTE head balances by resampling instead:
    rows change, so no per-row weights or groups can follow them."""
    if "smote" in head.named_steps:
        return {}
    params = {"clf__sample_weight": balanced_weights(y, video)}
    if isinstance(head.named_steps["clf"], AutoSVC) and groups is not None:
        params["clf__groups"] = groups
    if _is_sequence_head(head):
        params.update({f"clf__{k}": v for k, v in
                       predict_params(head, video, track, frame_index).items()})
        if groups is not None:
            params["clf__groups"] = groups
    return params


def fit_head(head: Pipeline, X: np.ndarray, y: np.ndarray, video: np.ndarray,
             groups: np.ndarray | None = None, track: np.ndarray | None = None,
             frame_index: np.ndarray | None = None) -> Pipeline:
    """Fit a head with its :func:`fit_params` (XGBoost's threads set by the size of X)."""
    clf = head.named_steps["clf"]
    if clf.__class__.__name__ == "XGBClassifier" and clf.get_params()["n_jobs"] is None:
        clf.set_params(n_jobs=1 if len(X) < XGB_THREADS_FROM_ROWS else os.cpu_count())
    return head.fit(X, y, **fit_params(head, y, video, groups, track, frame_index))


def new_head(name: str, random_state: int = 0, **params) -> Pipeline:
    return HEADS.create(name, random_state=random_state, **params)


__all__ = ["AutoSVC", "HEADS", "NystroemSVC", "SEARCH_SPACES", "balanced_weights", "fit_head",
           "fit_params", "new_head", "predict_params"]
