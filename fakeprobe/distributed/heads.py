"""``fit-xgb --engine dask`` and ``fit-logreg --engine dask``: heads on a cache's features read
in chunks, so no process ever holds the whole feature matrix (XGBoost through ``xgboost.dask``;
a logistic head by ``SGDClassifier.partial_fit`` over the chunks).

Only the row index (one integer, label and item per face row) is read into the driver; the
features stay in the HDF5 file and reach the workers as ``dask.array`` chunks of
:class:`CachedRows` (the cache reader's rows of each feature set, ``chunk_rows`` at a time).
Items are split by :func:`fakeprobe.training.cv.grouped_folds`, stratified and grouped by
``group`` as an in-memory fit splits them; every fold trains with ``xgboost.dask.train`` on its
training rows and scores its test rows, whose frame scores become item scores as in-memory
fits' default aggregation makes them (a track's mean, an item's most suspect track).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.heads import LOGREG_C, balanced_weights
from fakeprobe.classifiers.data import Selection, label_codes
from fakeprobe.classifiers.metrics import youden_threshold
from fakeprobe.core.schema import READ_STATUSES
from fakeprobe.distributed.cluster import connect
from fakeprobe.errors import FakeprobeError
from fakeprobe.features.cache import CacheReader
from fakeprobe.training.cv import grouped_folds

#: Rows per chunk by default: 50,000 rows of a 1,280-d float32 set are 244 MiB.
CHUNK_ROWS = 50_000


class CachedRows:
    """An array-like view of one feature set's selected rows for ``dask.array.from_array``:
    slicing it opens the cache with :class:`CacheReader` (read-only) and reads those rows
    only. It pickles as the path, the name and the row index, so workers read the file
    themselves."""

    def __init__(self, cache_path: Path | str, name: str, rows: np.ndarray, dim: int) -> None:
        self.cache_path, self.name, self.rows = str(cache_path), name, rows
        self.shape = (len(rows), dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key) -> np.ndarray:
        first, columns = key if isinstance(key, tuple) else (key, slice(None))
        rows = self.rows[first]
        with CacheReader(self.cache_path) as reader:
            block = reader.features(self.name, rows) if len(rows) else np.zeros(
                (0, self.shape[1]), np.float32)
        return np.asarray(block, np.float32)[:, columns]


@dataclass
class RowIndex:
    """The selected face rows of a cache: their file rows, items and labels."""

    rows: np.ndarray  # row positions in the cache, increasing
    video: np.ndarray  # per row: position in ``videos``
    frame_index: np.ndarray
    track: np.ndarray
    videos: dict[str, np.ndarray]
    dims: dict[str, int]
    excluded: list[dict[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return label_codes(self.videos["label"])


def row_index(cache_path: Path | str, features: Sequence[str],
              selection: Selection | None = None) -> RowIndex:
    """The face rows a fit on ``features`` uses (the selection of
    :func:`fakeprobe.classifiers.data.load_frames`, without reading any feature): original rows
    only, so rows made by ``extract --augment`` neither train nor are scored here."""
    selection = selection or Selection()
    with CacheReader(cache_path) as cache:
        available = cache.feature_sets
        unknown = [f for f in features if f not in available]
        if unknown:
            raise FakeprobeError(f"{cache_path}: no feature set {', '.join(unknown)}; it "
                                 f"holds {', '.join(available) or 'none'}")
        videos = cache.videos()
        frames = cache.frames(("video", "has_face", "frame_index", "track", "augment"))
        done = {f: cache.feature_done(f) for f in features}
    keep = np.array([selection.keeps(d, m, lab, g) for d, m, lab, g in
                     zip(videos["dataset"], videos["method"], videos["label"],
                         videos["group"])], dtype=bool)
    excluded = []
    for i in np.flatnonzero(keep):
        status = videos["status"][i]
        missing = [f for f in features if not done[f][i]]
        reason = (f"{status}: {videos['error'][i]}" if status not in READ_STATUSES
                  else "no_face: no face in any sampled frame" if status == "no_face"
                  else f"features not extracted: {', '.join(missing)}" if missing else None)
        if reason:
            excluded.append({"id": str(videos["id"][i]), "reason": reason})
            keep[i] = False
    rows = np.flatnonzero(keep[frames["video"]] & frames["has_face"] & (frames["augment"] == ""))
    positions = np.flatnonzero(np.isin(np.arange(len(keep)), frames["video"][rows]))
    remap = np.full(len(keep), -1)
    remap[positions] = np.arange(len(positions))
    return RowIndex(rows, remap[frames["video"][rows]], frames["frame_index"][rows],
                    frames["track"][rows],
                    {k: v[positions] for k, v in videos.items()},
                    {f: int(available[f]["dim"]) for f in features}, excluded)


def feature_array(cache_path: Path | str, index: RowIndex, chunk_rows: int = CHUNK_ROWS):
    """The selected rows' features (the sets side by side) as a lazy ``dask.array``."""
    import dask.array as da

    parts = [da.from_array(CachedRows(cache_path, name, index.rows, dim),
                           chunks=(chunk_rows, dim), asarray=False, lock=False,
                           name=f"fakeprobe-{name}-{Path(cache_path).name}-{chunk_rows}")
             for name, dim in index.dims.items()]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=1)


#: The in-memory head's defaults (``fakeprobe.classifiers.heads._xgb``) as booster parameters.
XGB_PARAMS = dict(max_depth=4, learning_rate=0.1, subsample=0.8, colsample_bytree=0.3,
                  max_bin=64, min_child_weight=1.0, tree_method="hist",
                  objective="binary:logistic", eval_metric="logloss")
XGB_ROUNDS = 200


@dataclass(frozen=True)
class ClusterFitReport:
    """Grouped cross-validation of a head on a cluster: per fold and pooled AUCs (item
    scores by the default aggregation), and the sizes and costs of the run."""

    head: str
    features: tuple[str, ...]
    n_rows: int
    n_items: int
    n_columns: int
    chunk_rows: int
    folds: list[dict[str, Any]]
    video_auc: float | None
    frame_auc: float | None
    seconds: float
    workers: int
    excluded: list[dict[str, str]]
    #: Youden's J on the pooled out-of-fold item scores: a final model's decision threshold.
    threshold: float = 0.5
    #: With ``final``: the pipeline fitted on every training row (not part of ``to_dict``).
    model: Any = field(default=None, repr=False, compare=False)
    final_fit_seconds: float | None = None
    #: Pooled out-of-fold scores: per row (``frame_scores``) and per item (``video_scores``).
    frame_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    video_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: Per item: the fold that scored it (-1: none).
    video_folds: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        skip = ("model", "frame_scores", "video_scores", "video_folds")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        data["features"] = list(self.features)
        return data


def cross_validate_xgb(cache_path: Path | str, features: Sequence[str], *,
                       params: dict[str, Any] | None = None, rounds: int = XGB_ROUNDS,
                       **options: Any) -> ClusterFitReport:
    """Grouped cross-validation of XGBoost through ``xgboost.dask`` on ``features`` of
    ``cache_path``, read ``chunk_rows`` rows at a time on the cluster (``options``: those of
    :func:`cross_validate`)."""
    import xgboost.dask as dxgb

    def fit_predict(client, X, y, w, train, test, random_state):
        booster_params = {**XGB_PARAMS, "seed": random_state, **(params or {})}
        train_set = dxgb.DaskDMatrix(client, X[train], y[train], weight=w[train])
        booster = dxgb.train(client, booster_params, train_set,
                             num_boost_round=rounds)["booster"]
        if test is None:
            return xgb_pipeline(booster)
        return dxgb.predict(client, booster, X[test]).compute()

    return cross_validate(cache_path, features, "xgb", fit_predict, **options)


def xgb_pipeline(booster):
    """The in-memory xgb head's pipeline around a trained booster: an ``XGBClassifier``
    holding it, behind a pass-through scaling step (the booster saw unscaled features; trees
    need no standardisation), so a model file of either engine loads and scores alike."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    classifier = XGBClassifier()
    classifier.load_model(bytearray(booster.save_raw("ubj")))
    return Pipeline([("scale", "passthrough"), ("clf", classifier)])


#: Passes of the SGD logistic head over the training chunks.
SGD_EPOCHS = 20


def cross_validate_logreg(cache_path: Path | str, features: Sequence[str], *,
                          C: float = LOGREG_C, epochs: int = SGD_EPOCHS,
                          **options: Any) -> ClusterFitReport:
    """Grouped cross-validation of a logistic head fitted out of core: a standard scaler and
    ``SGDClassifier(loss="log_loss")`` updated chunk by chunk (``partial_fit``) with the
    in-memory head's regularisation; no more than one chunk is in memory at a time."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    def fit_predict(client, X, y, w, train, test, random_state):
        # the updates are sequential: the driver reads each chunk itself (a round trip to a
        # worker per chunk and pass would cost more than the read)
        blocks = [(k, _Local(X.blocks[k]), slice(start, start + size)) for k, (start, size) in
                  enumerate(zip(np.cumsum((0,) + X.chunks[0][:-1]), X.chunks[0]))]
        scaler = StandardScaler()
        for _, block, rows in blocks:
            if train[rows].any():
                scaler.partial_fit(block.compute()[train[rows]])
        # the objective of the in-memory head (LogisticRegression(C)): per row, alpha = 1/(C n)
        model = SGDClassifier(loss="log_loss", alpha=1.0 / (C * max(int(train.sum()), 1)),
                              random_state=random_state)
        y_rows, w_rows = y.compute(scheduler="sync"), w.compute(scheduler="sync")
        for _ in range(epochs):
            for _, block, rows in blocks:
                keep = train[rows]
                if keep.any():
                    model.partial_fit(scaler.transform(block.compute()[keep]),
                                      y_rows[rows][keep], classes=np.array([0.0, 1.0]),
                                      sample_weight=w_rows[rows][keep])
        if test is None:
            from sklearn.pipeline import Pipeline

            return Pipeline([("scale", scaler), ("clf", model)])
        scores = [model.predict_proba(scaler.transform(block.compute()[test[rows]]))[:, 1]
                  for _, block, rows in blocks if test[rows].any()]
        return np.concatenate(scores) if scores else np.zeros(0)

    return cross_validate(cache_path, features, "logreg", fit_predict, **options)


class _Local:
    """A dask array computed in this process (no cluster round trip)."""

    def __init__(self, array) -> None:
        self.array = array

    def compute(self) -> np.ndarray:
        return self.array.compute(scheduler="sync")


def cross_validate(cache_path: Path | str, features: Sequence[str], head: str, fit_predict, *,
                   selection: Selection | None = None, n_splits: int = 5,
                   random_state: int = 0, chunk_rows: int = CHUNK_ROWS,
                   address: str | None = None, workers: int = 2,
                   memory_limit: str | int | None = None, final: bool = False,
                   folds: list | None = None) -> ClusterFitReport:
    """Grouped ``n_splits``-fold cross-validation on a cluster: ``fit_predict(client, X, y,
    w, train, test, random_state)`` fits on the ``train`` rows of the lazy feature array ``X``
    (labels ``y``, balanced weights ``w``: dask arrays) and returns the ``test`` rows' scores,
    or with ``test=None`` the fitted pipeline. ``final``: then fit on every labelled row too
    (the report's ``model``). ``folds``: (train, test) item ids, instead of making them."""
    from sklearn.metrics import roc_auc_score

    started = time.perf_counter()
    features = tuple(dict.fromkeys(features))
    index = row_index(cache_path, features, selection)
    if not len(index.rows):
        raise FakeprobeError(f"{cache_path}: no selected face row with {'+'.join(features)}")
    labels = index.labels
    if folds is None:
        folds = grouped_folds(SimpleNamespace(video_labels=labels, videos=index.videos),
                              n_splits=n_splits, random_state=random_state)
    else:  # item ids -> positions in the index (ids not selected here are left out)
        ids = {str(v): k for k, v in enumerate(index.videos["id"])}
        folds = [tuple(np.array([ids[str(v)] for v in part if str(v) in ids], int)
                       for part in fold) for fold in folds]
    y_rows = labels[index.video]
    aggregation = Aggregation()  # a track's mean, an item's most suspect track
    frame_scores = np.full(len(index.rows), np.nan)
    video_folds = np.full(len(labels), -1)
    results = []
    with connect(address, workers, memory_limit) as client:
        import dask.array as da

        X = feature_array(cache_path, index, chunk_rows)
        y = da.from_array(y_rows.astype(np.float32), chunks=X.chunks[0])
        for k, (train_videos, test_videos) in enumerate(folds):
            t0 = time.perf_counter()
            train = np.isin(index.video, train_videos) & (y_rows >= 0)
            test = np.isin(index.video, test_videos)
            video_folds[test_videos] = k
            # every item counts once and each class half, as in an in-memory fit
            weight = np.zeros(len(y_rows), np.float32)
            weight[train] = balanced_weights(y_rows[train], index.video[train])
            w = da.from_array(weight, chunks=X.chunks[0])
            scores = fit_predict(client, X, y, w, train, test, random_state)
            frame_scores[test] = scores
            videos = aggregation.video_scores(scores, index.video[test],
                                              index.frame_index[test], index.track[test],
                                              len(labels))
            scored = ~np.isnan(videos) & (labels >= 0)
            results.append({"fold": k, "train_items": int(len(train_videos)),
                            "test_items": int(len(test_videos)),
                            "train_rows": int(train.sum()), "test_rows": int(test.sum()),
                            "video_auc": _auc(labels[scored], videos[scored], roc_auc_score),
                            "seconds": time.perf_counter() - t0})
        model = final_seconds = None
        if final:
            t0 = time.perf_counter()
            train = y_rows >= 0
            weight = np.zeros(len(y_rows), np.float32)
            weight[train] = balanced_weights(y_rows[train], index.video[train])
            model = fit_predict(client, X, y, da.from_array(weight, chunks=X.chunks[0]),
                                train, None, random_state)
            final_seconds = time.perf_counter() - t0
        n_workers = len(client.scheduler_info()["workers"])
    done = ~np.isnan(frame_scores)
    videos = aggregation.video_scores(frame_scores[done], index.video[done],
                                      index.frame_index[done], index.track[done], len(labels))
    scored = ~np.isnan(videos) & (labels >= 0)
    rows_ok = ~np.isnan(frame_scores) & (y_rows >= 0)
    return ClusterFitReport(
        head=head, features=features, n_rows=int(len(index.rows)), n_items=int(len(labels)),
        n_columns=int(X.shape[1]), chunk_rows=int(chunk_rows), folds=results,
        video_auc=_auc(labels[scored], videos[scored], roc_auc_score),
        frame_auc=_auc(y_rows[rows_ok], frame_scores[rows_ok], roc_auc_score),
        seconds=time.perf_counter() - started, workers=n_workers, excluded=index.excluded,
        threshold=youden_threshold(labels[scored], videos[scored]),
        model=model, final_fit_seconds=final_seconds, frame_scores=frame_scores,
        video_scores=videos, video_folds=video_folds)


def _auc(y: np.ndarray, scores: np.ndarray, roc_auc_score) -> float | None:
    return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else None
