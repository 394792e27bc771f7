"""Grouped cross-validation, hold-out and cross-dataset evaluation of heads on cached frames.

Splits are made over items, by ``group`` (``StratifiedGroupKFold``): a fake and its source real,
and every frame of one video, stay on one side. Inside each training part, a second grouped
cross-validation gives out-of-fold video scores from which the decision threshold is picked
(Youden's J), so the test part never chooses its own threshold; the optional hyperparameter
search runs inside the training part too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import FrameData, label_code
from fakeprobe.classifiers.heads import fit_head, new_head, predict_params
from fakeprobe.classifiers.metrics import binary_metrics, youden_threshold
from fakeprobe.core.resources import measure
from fakeprobe.errors import FakeprobeError
from fakeprobe.training.search import INNER_FOLDS, check_search, search_params, smallest_class

#: The inner cross-validation that picks a threshold sees at most this many frames (whole
#: items, drawn at random): a threshold needs far fewer frames than a head, and this bounds its
#: cost on large caches.
INNER_MAX_FRAMES = 20_000
#: The threshold used when the training items cannot choose one (too few groups for an inner
#: split, or inner folds that scored one class): the midpoint of a probability. Every use is
#: recorded with its reason (:attr:`FoldResult.threshold_note`, :attr:`EvalReport.notes`).
FALLBACK_THRESHOLD = 0.5
#: Augmented copies of a track train a temporal head as tracks of their own: track numbers
#: are offset by this much per augmentation (far above any real track count).
AUGMENT_TRACK_STRIDE = 1 << 20


@dataclass
class FoldResult:
    fold: int
    train_videos: int
    test_videos: int
    threshold: float
    fit_seconds: float
    predict_seconds: float
    peak_rss_mb: float
    params: dict[str, Any] = field(default_factory=dict)
    #: Candidates the hyperparameter search tried (grid points, random draws, Optuna trials).
    search_trials: int = 0
    #: What the fitted head says of itself: a stack's weight per member, a temporal head's
    #: training epochs (see :func:`head_info`).
    head_info: dict[str, Any] = field(default_factory=dict)
    #: Why the fold's threshold is :data:`FALLBACK_THRESHOLD` instead of one chosen by the
    #: inner cross-validation; empty when it was chosen.
    threshold_note: str = ""


@dataclass(frozen=True)
class Roles:
    """Per item (video position), whether it may be trained on and whether it is scored, in
    every split. Splits are made over all items by group first; roles only narrow each side,
    so a group never crosses sides whatever the roles."""

    train: np.ndarray  # bool per item of the training data
    test: np.ndarray  # bool per item of the scored data

    @classmethod
    def everything(cls, data: FrameData, target: FrameData | None = None) -> "Roles":
        target = target if target is not None else data
        return cls(np.ones(data.n_videos, bool), np.ones(target.n_videos, bool))


@dataclass
class EvalReport:
    """Scores and metrics of one head on one feature combination."""

    head: str
    features: tuple[str, ...]
    aggregation: dict[str, Any]
    protocol: str  # "cv-5", "holdout-0.25", "train/test"
    frame: dict[str, Any]
    video: dict[str, Any]
    threshold: float  # for a final model: Youden's J on the out-of-fold video scores
    folds: list[FoldResult]
    video_scores: list[dict[str, Any]]
    excluded: list[dict[str, str]]
    n_frames: int
    #: Metrics per (dataset, method) of the scored items: see :func:`breakdown`.
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    #: Per scored face row, columns ``video`` (position in :attr:`video_scores`),
    #: ``frame_index``, ``timestamp``, ``track``, ``score``, ``threshold``: the timelines of a
    #: report. Left out of :meth:`to_dict` unless asked for (it grows with the frames).
    frame_scores: dict[str, list] = field(default_factory=dict, repr=False)
    #: What the reader should know about how the numbers were made, e.g. a fold whose threshold
    #: is :data:`FALLBACK_THRESHOLD` and why.
    notes: list[str] = field(default_factory=list)

    @property
    def fit_seconds(self) -> float:
        return float(sum(f.fit_seconds for f in self.folds))

    @property
    def predict_seconds(self) -> float:
        return float(sum(f.predict_seconds for f in self.folds))

    @property
    def peak_rss_mb(self) -> float:
        return float(max((f.peak_rss_mb for f in self.folds), default=0.0))

    def to_dict(self, frames: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not frames:
            data.pop("frame_scores")
        data["features"] = list(self.features)
        data.update(fit_seconds=self.fit_seconds, predict_seconds=self.predict_seconds,
                    peak_rss_mb=self.peak_rss_mb)
        return data


def fake_proba(model: Pipeline, X: np.ndarray, **params) -> np.ndarray:
    """P(fake) per row, whatever the order of ``classes_`` (``params``: the head's
    :func:`~fakeprobe.classifiers.heads.predict_params`)."""
    classes = list(model.classes_)
    return model.predict_proba(X, **params)[:, classes.index(1)]


def head_info(model: Pipeline) -> dict[str, Any]:
    """A fitted head's own summary: the meta-model weight of each member of a stack, the
    epochs a temporal head trained for; empty for the others."""
    clf = model.named_steps["clf"]
    info: dict[str, Any] = {}
    if hasattr(clf, "member_weights_"):
        info["member_weights"] = dict(clf.member_weights_)
    if hasattr(clf, "n_epochs_"):
        info["epochs"] = int(clf.n_epochs_)
    return info


def _rows_proba(model: Pipeline, data: FrameData, rows: np.ndarray) -> np.ndarray:
    """P(fake) of the selected rows of ``data``, with their sequences for a temporal head."""
    return fake_proba(model, data.X[rows], **predict_params(
        model, data.video[rows], data.track[rows], data.frame_index[rows]))


def _fit_rows(head: Pipeline, data: FrameData, rows: np.ndarray) -> Pipeline:
    """``head`` fitted on the selected rows of ``data`` (with every per-row fit parameter).
    Each augmented copy of a track is a track of its own, so a temporal head sees it as one
    more sequence, never mixed with the original frames."""
    return fit_head(head, data.X[rows], data.y[rows], data.video[rows], data.groups[rows],
                    _sequence_tracks(data)[rows], data.frame_index[rows])


def _sequence_tracks(data: FrameData) -> np.ndarray:
    """Per row, its track, offset by :data:`AUGMENT_TRACK_STRIDE` times the rank of its
    augmentation (0 for original rows)."""
    if data.augment is None:
        return data.track
    names, rank = np.unique(data.augment.astype(str), return_inverse=True)
    if names[0] != "":
        rank = rank + 1
    return data.track.astype(np.int64) + AUGMENT_TRACK_STRIDE * rank


def grouped_folds(data: FrameData, n_splits: int = 5, random_state: int = 0
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) item positions, stratified by label and grouped by ``group``."""
    labels = data.video_labels
    groups = data.videos["group"]
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise FakeprobeError(f"grouped splits need at least 2 groups; the selection has "
                             f"{n_groups}")
    if len(np.unique(labels[labels >= 0])) < 2:
        raise FakeprobeError("the selection holds a single class: a detector needs real and "
                             "fake items")
    counts = np.bincount(labels[labels >= 0], minlength=2)
    if counts.min() < 2:  # a class alone in one fold leaves a training part without it
        raise FakeprobeError(
            f"a grouped split (--cv, --holdout) needs at least 2 real and 2 fake items; the "
            f"selection "
            f"has {counts[0]} real and {counts[1]} fake: add items, or train here and test on "
            "another cache (--eval)")
    # every fold needs a member of each class
    n_splits = max(2, min(n_splits, n_groups, smallest_class(labels)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels, groups)]


def _rows(data: FrameData, videos: np.ndarray, training: bool = False) -> np.ndarray:
    """The rows of ``videos``: to train, with their augmented rows; to score, original only."""
    rows = np.isin(data.video, videos)
    return rows if training else rows & data.original


def _video_scores(data: FrameData, rows: np.ndarray, scores: np.ndarray,
                  aggregation: Aggregation) -> np.ndarray:
    return aggregation.video_scores(scores, data.video[rows], data.frame_index[rows],
                                    data.track[rows], data.n_videos)


def _inner_threshold(head: Pipeline, data: FrameData, train_videos: np.ndarray,
                     aggregation: Aggregation, random_state: int) -> tuple[float, str]:
    """Youden threshold on out-of-fold video scores of an inner grouped CV of the training
    items, and ``""``; or :data:`FALLBACK_THRESHOLD` and the reason when they hold too few
    groups to split or the inner folds score a single class."""
    n_rows = np.bincount(data.video, minlength=data.n_videos)[train_videos]
    if n_rows.sum() > INNER_MAX_FRAMES:
        order = np.random.default_rng(random_state).permutation(len(train_videos))
        keep = order[np.cumsum(n_rows[order]) <= INNER_MAX_FRAMES]
        train_videos = np.sort(train_videos[keep])
    groups = data.videos["group"][train_videos]
    labels = data.video_labels[train_videos]
    n_groups, rarer = len(np.unique(groups)), smallest_class(labels)
    if n_groups < INNER_FOLDS or rarer < INNER_FOLDS:
        return FALLBACK_THRESHOLD, (
            f"threshold {FALLBACK_THRESHOLD:g}, not chosen: the training part holds {n_groups} "
            f"group(s) and {rarer} item(s) of its rarer class, too few for a {INNER_FOLDS}-fold "
            f"inner split")
    splitter = StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=random_state)
    oof = np.full(data.n_videos, np.nan)
    for tr, te in splitter.split(np.zeros(len(labels)), labels, groups):
        tr_rows = _rows(data, train_videos[tr], training=True)
        te_rows = _rows(data, train_videos[te])
        if len(np.unique(data.y[tr_rows])) < 2 or not te_rows.any():
            continue
        model = _fit_rows(clone(head), data, tr_rows)
        scores = _video_scores(data, te_rows, _rows_proba(model, data, te_rows), aggregation)
        done = ~np.isnan(scores)
        oof[done] = scores[done]
    scored = train_videos[~np.isnan(oof[train_videos])]
    if len(np.unique(data.video_labels[scored])) < 2:
        return FALLBACK_THRESHOLD, (f"threshold {FALLBACK_THRESHOLD:g}, not chosen: the inner "
                                    f"folds scored items of a single class")
    return youden_threshold(data.video_labels[scored], oof[scored]), ""


def _fit_fold(name: str, head_params: dict, data: FrameData, train_videos: np.ndarray,
              aggregation: Aggregation, search: str | None, n_iter: int, random_state: int,
              ) -> tuple[Pipeline, float, str, dict, int, float, float]:
    """Fit on the training items: search, threshold, final fit. Returns the model, the
    threshold and why it fell back (or ``""``), the chosen parameters, the search's candidates
    tried, fit seconds and peak RSS."""
    head = new_head(name, random_state=random_state, **head_params)
    rows = _rows(data, train_videos, training=True)
    if len(np.unique(data.y[rows])) < 2:
        raise FakeprobeError("a training part holds a single class; use fewer folds")
    with measure() as usage:
        # the search scores inner folds, so it sees original rows only
        params, trials = (search_params(head, name, data, _rows(data, train_videos), search,
                                        n_iter, random_state) if search else ({}, 0))
        head.set_params(**params)
        threshold, note = _inner_threshold(head, data, train_videos, aggregation, random_state)
        model = _fit_rows(head, data, rows)
    return model, threshold, note, params, trials, usage.seconds, usage.peak_rss_mb


def _evaluate(data: FrameData, name: str, folds: list[tuple[np.ndarray, np.ndarray]],
              protocol: str, aggregation: Aggregation, search: str | None, n_iter: int,
              random_state: int, head_params: dict, test: FrameData | None = None,
              roles: Roles | None = None) -> EvalReport:
    """Run every (train, test) split; test items come from ``test`` (or ``data``). ``roles``
    narrows, inside every split, which items may train and which are scored."""
    target = test if test is not None else data
    roles = roles or Roles.everything(data, target)
    folds = [(tr[roles.train[tr]], te[roles.test[te]]) for tr, te in folds]
    frame_scores = np.full(len(target.y), np.nan)
    frame_thresholds = np.full(len(target.y), np.nan)
    video_scores = np.full(target.n_videos, np.nan)
    video_thresholds = np.full(target.n_videos, np.nan)
    video_fold = np.full(target.n_videos, -1)
    results = []
    for k, (train_videos, test_videos) in enumerate(folds):
        model, threshold, note, params, trials, fit_s, peak = _fit_fold(
            name, head_params, data, train_videos, aggregation, search, n_iter, random_state)
        rows = _rows(target, test_videos)
        with measure() as usage:
            scores = _rows_proba(model, target, rows) if rows.any() else np.zeros(0)
        frame_scores[rows], frame_thresholds[rows] = scores, threshold
        videos = _video_scores(target, rows, scores, aggregation)
        hit = ~np.isnan(videos)
        video_scores[hit], video_thresholds[hit], video_fold[hit] = videos[hit], threshold, k
        results.append(FoldResult(k, len(train_videos), len(test_videos), threshold, fit_s,
                                  usage.seconds, max(peak, usage.peak_rss_mb), params,
                                  trials, head_info(model), note))
    frame_ok = ~np.isnan(frame_scores) & (target.y >= 0)
    labels = target.video_labels
    video_ok = ~np.isnan(video_scores) & (labels >= 0)
    notes = [f"fold {r.fold}: {r.threshold_note}" for r in results if r.threshold_note]
    if video_ok.any():
        final_threshold = youden_threshold(labels[video_ok], video_scores[video_ok])
    else:
        final_threshold = FALLBACK_THRESHOLD
        notes.append(f"final threshold {FALLBACK_THRESHOLD:g}, not chosen: no labelled item "
                     f"was scored")
    scored = np.flatnonzero(~np.isnan(video_scores))
    position = np.full(target.n_videos, -1)
    position[scored] = np.arange(len(scored))
    frame_rows = np.flatnonzero(~np.isnan(frame_scores))
    frame_rows = frame_rows[position[target.video[frame_rows]] >= 0]
    per_video = [
        {"id": str(target.videos["id"][i]), "label": str(target.videos["label"][i]),
         "group": str(target.videos["group"][i]), "dataset": str(target.videos["dataset"][i]),
         "method": str(target.videos["method"][i]), "score": float(video_scores[i]),
         "threshold": float(video_thresholds[i]), "fold": int(video_fold[i]),
         "frames": int(((target.video == i) & target.original).sum())}
        for i in scored
    ]
    frame_table = {
        "video": position[target.video[frame_rows]].tolist(),
        "frame_index": target.frame_index[frame_rows].tolist(),
        "timestamp": target.timestamp[frame_rows].tolist(),
        "track": target.track[frame_rows].tolist(),
        "score": frame_scores[frame_rows].tolist(),
        "threshold": frame_thresholds[frame_rows].tolist(),
    }
    return EvalReport(
        head=name, features=data.features, aggregation=asdict(aggregation), protocol=protocol,
        frame=_metrics(target.y[frame_ok], frame_scores[frame_ok], frame_thresholds[frame_ok]),
        video=_metrics(labels[video_ok], video_scores[video_ok], video_thresholds[video_ok]),
        threshold=float(final_threshold), folds=results, video_scores=per_video,
        excluded=list(target.excluded), n_frames=int(frame_ok.sum()),
        breakdown=breakdown(per_video, frame_table), frame_scores=frame_table, notes=notes,
    )


def breakdown(video_scores: list[dict[str, Any]], frame_table: dict[str, list]
              ) -> list[dict[str, Any]]:
    """Metrics of scored items per dataset and per (dataset, fake method).

    One cell per dataset (``method: "*"``: all its items) and one per fake method within it
    (the dataset's reals against that method's fakes), each with video and frame metrics at
    the fold thresholds. A cell with one class has counts but no ranking metrics. This is
    what a cross-dataset table and a per-method column read.
    """
    if not video_scores:
        return []
    label = np.array([label_code(v["label"]) for v in video_scores])
    dataset = np.array([v["dataset"] for v in video_scores], dtype=object)
    method = np.array([v["method"] for v in video_scores], dtype=object)
    score = np.array([v["score"] for v in video_scores], dtype=float)
    threshold = np.array([v["threshold"] for v in video_scores], dtype=float)
    f_video = np.asarray(frame_table["video"], dtype=int)
    f_score = np.asarray(frame_table["score"], dtype=float)
    f_threshold = np.asarray(frame_table["threshold"], dtype=float)
    cells = []
    for name in sorted(set(dataset)):
        in_set = (dataset == name) & (label >= 0)
        subsets = [("*", in_set)]
        fakes = sorted(set(method[in_set & (label == 1)]))
        if len(fakes) > 1:
            subsets += [(m, in_set & ((label == 0) | (method == m))) for m in fakes]
        for method_name, keep in subsets:
            rows = keep[f_video] if len(f_video) else np.zeros(0, bool)
            cells.append({
                "dataset": str(name), "method": str(method_name),
                "videos": int(keep.sum()), "real": int((keep & (label == 0)).sum()),
                "fake": int((keep & (label == 1)).sum()),
                "video": _metrics(label[keep], score[keep], threshold[keep]),
                "frame": _metrics(label[f_video[rows]], f_score[rows], f_threshold[rows]),
            })
    return cells


def _metrics(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Metrics with each score judged at its own fold's threshold (recorded as their mean)."""
    if len(y) == 0:
        return binary_metrics(np.zeros(0, int), np.zeros(0))
    # judging score >= t_i equals judging (score - t_i + 0.5) >= 0.5 for the counts; the
    # ranking metrics use the raw scores
    shifted = np.clip(scores - thresholds + 0.5, 0.0, 1.0)
    counts = binary_metrics(y, shifted, 0.5)
    ranks = binary_metrics(y, scores, float(np.mean(thresholds)))
    for key in ("roc_auc", "pr_auc", "log_loss", "eer", "eer_threshold"):
        counts[key] = ranks[key]
    counts["threshold"] = float(np.mean(thresholds))
    return counts


def cross_validate(data: FrameData, head: str, *, aggregation: Aggregation | None = None,
                   n_splits: int = 5, search: str | None = None, n_iter: int = 10,
                   random_state: int = 0, head_params: dict | None = None,
                   folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
                   roles: Roles | None = None) -> EvalReport:
    """Grouped k-fold cross-validation of one head (``folds`` reuses given splits)."""
    check_search(search)
    folds = folds if folds is not None else grouped_folds(data, n_splits, random_state)
    return _evaluate(data, head, folds, f"grouped-cv-{len(folds)}", aggregation or
                     Aggregation(), search, n_iter, random_state, head_params or {},
                     roles=roles)


def holdout(data: FrameData, head: str, *, test_size: float = 0.25, **options) -> EvalReport:
    """One grouped split: about ``test_size`` of the groups are held out."""
    n = max(2, int(round(1 / test_size)))
    folds = grouped_folds(data, n, options.get("random_state", 0))[:1]
    report = cross_validate(data, head, folds=folds, **options)
    report.protocol = f"grouped-holdout-{test_size:g}"
    return report


def train_test(train: FrameData, test: FrameData, head: str, *,
               aggregation: Aggregation | None = None, search: str | None = None,
               n_iter: int = 10, random_state: int = 0, head_params: dict | None = None,
               roles: Roles | None = None) -> EvalReport:
    """Fit on every item of ``train``, score every item of ``test`` (cross-dataset)."""
    check_search(search)
    if train.features != test.features:
        raise FakeprobeError("train and test must use the same feature sets")
    shared = set(train.videos["group"]) & set(test.videos["group"])
    if shared:
        raise FakeprobeError(f"{len(shared)} group(s) are in both the training and the test "
                             f"data (e.g. {sorted(shared)[0]!r}); the score would be a lie")
    folds = [(np.arange(train.n_videos), np.arange(test.n_videos))]
    return _evaluate(train, head, folds, "train/test", aggregation or Aggregation(), search,
                     n_iter, random_state, head_params or {}, test=test, roles=roles)


def fit_final(data: FrameData, head: str, *, params: dict | None = None,
              random_state: int = 0, head_params: dict | None = None,
              train: np.ndarray | None = None) -> tuple[Pipeline, float]:
    """The head fitted on every item (those with ``train`` true when given, with ``params``
    from the CV), and its fit seconds."""
    if train is not None:
        data = data.subset_videos(np.flatnonzero(train))
    model = new_head(head, random_state=random_state, **(head_params or {}))
    model.set_params(**(params or {}))
    if len(np.unique(data.y)) < 2:
        raise FakeprobeError("the selection holds a single class: a detector needs real and "
                             "fake items")
    with measure() as usage:
        _fit_rows(model, data, np.ones(len(data.y), bool))
    return model, usage.seconds
