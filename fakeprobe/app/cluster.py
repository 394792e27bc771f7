"""Heads past one machine: ``fit_on_cluster`` evaluates the XGBoost head (through
``xgboost.dask``) or a logistic head (out of core) on a cache read in chunks, and saves the
final model with ``out`` (``fit-xgb --engine dask``, ``fit-logreg --engine dask``);
``compare_on_cluster`` tabulates both as ``compare`` does (``compare --engine dask``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from fakeprobe.app._result import Wrapped
from fakeprobe.app.protocol import Protocol, default_features
from fakeprobe.classifiers.data import Selection
from fakeprobe.errors import InvalidOption


class ClusterFitResult(Wrapped):
    """A grouped cross-validation on a cluster: ``folds``, pooled ``video_auc`` and
    ``frame_auc``, ``n_rows``, ``chunk_rows``, ``workers``, ``seconds``, ``excluded``."""


def fit_on_cluster(cache_path: Path | str, head: str = "xgb", *,
                   features: Sequence[str] = (), selection: Selection | None = None,
                   protocol: Protocol | None = None, out: Path | str | None = None,
                   address: str | None = None, workers: int = 2,
                   chunk_rows: int | None = None,
                   memory_limit: str | int | None = None, force: bool = False
                   ) -> ClusterFitResult:
    """Grouped cross-validation of ``head`` on a Dask cluster, the features read
    ``chunk_rows`` rows at a time: a cache larger than memory. ``xgb`` trains through
    ``xgboost.dask``; ``logreg`` is fitted out of core (``SGDClassifier(loss="log_loss")``
    updated chunk by chunk), so its numbers are close to, not equal to, lbfgs's. The
    protocol's folds and seed are used; its other options (search, hold-out, --eval, SMOTE,
    training roles) are not available on a cluster and are refused. ``out``: then the head is
    fitted on every labelled row through the engine too and saved there as a model file
    (``evaluate`` and ``predict`` load it), its threshold Youden's J on the out-of-fold item
    scores; ``force`` replaces a file of another kind."""
    from fakeprobe.distributed import require_dask

    protocol = protocol or Protocol()
    if head not in ENGINE_HEADS:
        raise InvalidOption(f"--engine dask trains xgb and logreg only, not {head}",
                            "--engine")
    _refuse_options(protocol)
    require_dask("dask.dataframe", "xgboost.dask")
    from fakeprobe.distributed.heads import CHUNK_ROWS

    cache_path = Path(cache_path)
    if out is not None:
        from fakeprobe.app.outputs import check_outputs

        check_outputs([(Path(out), "model", "--out")], [cache_path], force)
    features = tuple(x for f in features for x in f.split("+")) or default_features(cache_path)
    report = _runner(head)(
        cache_path, features, selection=selection, n_splits=protocol.folds,
        random_state=protocol.random_state, chunk_rows=chunk_rows or CHUNK_ROWS,
        address=address, workers=workers, memory_limit=memory_limit, final=out is not None)
    if out is not None:
        from fakeprobe.classifiers.model import save_model

        save_model(out, report.model, cluster_provenance(report, cache_path, selection,
                                                         protocol))
    return ClusterFitResult(report)


#: The heads the Dask engine trains.
ENGINE_HEADS = ("xgb", "logreg")


def _runner(head: str):
    from fakeprobe.distributed.heads import cross_validate_logreg, cross_validate_xgb

    return cross_validate_xgb if head == "xgb" else cross_validate_logreg


def _refuse_options(protocol: Protocol) -> None:
    refused = [name for name, given in (
        ("--holdout", protocol.holdout is not None),
        ("--eval", protocol.eval_cache is not None), ("--search", protocol.search is not None),
        ("--smote", protocol.smote),
        ("--train-dataset/--train-method", protocol.train_selection is not None),
        ("--train-fakes", protocol.train_fakes != "all")) if given]
    if refused:
        raise InvalidOption(f"--engine dask runs grouped cross-validation only: drop "
                            f"{', '.join(refused)}", "--engine")


def compare_on_cluster(cache_path: Path | str, heads: Sequence[str] = ENGINE_HEADS,
                       feature_sets: Sequence[str | Sequence[str]] = (), *,
                       selection: Selection | None = None, protocol: Protocol | None = None,
                       address: str | None = None, workers: int = 2,
                       chunk_rows: int | None = None, memory_limit: str | int | None = None,
                       aggregation: Any = None, save_run: Path | str | None = None,
                       report: Path | str | None = None, force: bool = False,
                       progress: Callable[[str], None] | None = None):
    """``compare`` on a Dask cluster (``compare --engine dask``): every head the engine
    trains on every feature combination, on the folds ``compare`` makes (once, over the items
    usable with every combination, ordered by id), as a
    :class:`~fakeprobe.app.heads.CompareResult` of the same table. The threshold-level
    metrics judge each fold's items at Youden's J on the other folds' out-of-fold scores.
    Items score by the default aggregation (another is refused); ``save_run``/``report`` as
    ``compare``'s."""
    from types import SimpleNamespace

    import numpy as np

    from fakeprobe.app.heads import CompareResult, write_run
    from fakeprobe.app.outputs import check_outputs, run_outputs
    from fakeprobe.classifiers.aggregate import Aggregation
    from fakeprobe.app.protocol import feature_sets as as_feature_sets
    from fakeprobe.classifiers.data import label_codes
    from fakeprobe.distributed import require_dask
    from fakeprobe.training.cv import grouped_folds

    heads = tuple(heads) or ENGINE_HEADS
    other = [h for h in heads if h not in ENGINE_HEADS]
    if other:
        raise InvalidOption(f"--engine dask: xgb and logreg only, not {', '.join(other)}",
                            "--head")
    protocol = protocol or Protocol()
    _refuse_options(protocol)
    if aggregation is not None and aggregation != Aggregation():
        raise InvalidOption("--engine dask scores items by the default aggregation (a track's "
                            "mean, an item's most suspect track): drop --aggregate/--smooth",
                            "--engine")
    cache_path = Path(cache_path)
    check_outputs(run_outputs(save_run, report), [cache_path], force)
    require_dask("dask.dataframe", "xgboost.dask")
    from fakeprobe.distributed.heads import CHUNK_ROWS, row_index

    combos = as_feature_sets(feature_sets) or [default_features(cache_path)]
    indexes = {f: row_index(cache_path, f, selection) for f in combos}
    common = set.intersection(*(set(map(str, i.videos["id"])) for i in indexes.values()))
    reference = indexes[combos[0]].videos
    ids = reference["id"].astype(str)
    order = np.flatnonzero(np.isin(ids, sorted(common)))
    order = order[np.argsort(ids[order])]
    items = SimpleNamespace(video_labels=label_codes(reference["label"][order]),
                            videos={k: v[order] for k, v in reference.items()})
    folds = [(ids[order][train], ids[order][test]) for train, test in
             grouped_folds(items, protocol.folds, protocol.random_state)]
    reports = []
    for features in combos:
        for head in heads:
            if progress:
                progress(f"{head} on {'+'.join(features)} (Dask)")
            done = _runner(head)(
                cache_path, features, selection=selection, folds=folds,
                random_state=protocol.random_state, chunk_rows=chunk_rows or CHUNK_ROWS,
                address=address, workers=workers, memory_limit=memory_limit)
            reports.append(eval_report(done, indexes[features]))
    excluded = {e["id"]: e for i in indexes.values() for e in i.excluded}
    left_out = sorted(excluded.values(), key=lambda e: e["id"])
    files = write_run("compare", reports, cache_path, protocol, selection or Selection(),
                      Aggregation(), left_out, save_run, report)
    return CompareResult(reports, left_out, files)


def eval_report(report: Any, index: Any):
    """A cluster CV as the :class:`~fakeprobe.training.cv.EvalReport` ``compare`` tabulates:
    each fold's items judged at Youden's J on the other folds' out-of-fold item scores."""
    from dataclasses import asdict

    import numpy as np

    from fakeprobe.classifiers.aggregate import Aggregation
    from fakeprobe.classifiers.metrics import youden_threshold
    from fakeprobe.training.cv import EvalReport, FoldResult, _metrics

    labels, y_rows = index.labels, index.labels[index.video]
    videos, frames, fold_of = report.video_scores, report.frame_scores, report.video_folds
    item_ok = ~np.isnan(videos) & (labels >= 0)
    thresholds = np.full(len(labels), np.nan)
    results = []
    for k, fold in enumerate(report.folds):
        others = item_ok & (fold_of != k) & (fold_of >= 0)
        threshold = youden_threshold(labels[others], videos[others])
        thresholds[fold_of == k] = threshold
        results.append(FoldResult(k, fold["train_items"], fold["test_items"], threshold,
                                  fold["seconds"], 0.0, 0.0))
    row_ok = ~np.isnan(frames) & (y_rows >= 0)
    v = index.videos
    scored = [{"id": str(v["id"][i]), "label": str(v["label"][i]), "group": str(v["group"][i]),
               "dataset": str(v["dataset"][i]), "method": str(v["method"][i]),
               "score": float(videos[i]), "threshold": float(thresholds[i]),
               "fold": int(fold_of[i]), "frames": int((index.video == i).sum())}
              for i in np.flatnonzero(~np.isnan(videos))]
    return EvalReport(
        head=report.head, features=tuple(report.features), aggregation=asdict(Aggregation()),
        protocol=f"cv-{len(report.folds)}",
        frame=_metrics(y_rows[row_ok], frames[row_ok], thresholds[index.video[row_ok]]),
        video=_metrics(labels[item_ok], videos[item_ok], thresholds[item_ok]),
        threshold=report.threshold, folds=results, video_scores=scored,
        excluded=list(report.excluded), n_frames=int(row_ok.sum()),
        notes=[f"Dask engine, {report.workers} worker(s), chunks of {report.chunk_rows} rows: "
               "fit s is each fold's fit and prediction; no memory was measured"])


def cluster_provenance(report: Any, cache_path: Path, selection: Selection | None,
                       protocol: Protocol) -> dict[str, Any]:
    """A model file's provenance for a head fitted on a cluster: the keys an in-memory fit
    writes (``fakeprobe.app.heads.fit``), its CV scores those of the cluster's folds."""
    from dataclasses import asdict
    from datetime import datetime, timezone

    import numpy as np

    from fakeprobe.classifiers.aggregate import Aggregation
    from fakeprobe.classifiers.data import label_codes
    from fakeprobe.classifiers.metrics import binary_metrics
    from fakeprobe.classifiers.model import cache_fingerprint
    from fakeprobe.core.provenance import environment
    from fakeprobe.distributed.heads import row_index
    from fakeprobe.features.cache import CacheReader, summarize

    selection = selection or Selection()
    index = row_index(cache_path, report.features, selection)
    with CacheReader(cache_path) as cache:
        extractor_config = cache.config.to_dict()
        configs = {f: cache.feature_sets[f] for f in report.features}
    labels, y_rows = index.labels, index.labels[index.video]
    videos, frames = report.video_scores, report.frame_scores
    item_ok, row_ok = ~np.isnan(videos) & (labels >= 0), ~np.isnan(frames) & (y_rows >= 0)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "protocol_options": protocol.to_dict(),
        "failures": summarize(cache_path)["failures"], "head": report.head,
        "features": list(report.features), "feature_configs": configs,
        "extractor_config": extractor_config, "aggregation": asdict(Aggregation()),
        "threshold": report.threshold, "params": {}, "smote": False,
        "selection": selection.to_dict(), "train_fakes": "all", "train_selection": None,
        "protocol": f"cv-{len(report.folds)}",
        "engine": "dask", "chunk_rows": report.chunk_rows,
        "cv_video": binary_metrics(labels[item_ok], videos[item_ok], report.threshold),
        "cv_frame": binary_metrics(y_rows[row_ok], frames[row_ok], report.threshold),
        "training_cache": cache_fingerprint(cache_path),
        "training_items": int((label_codes(index.videos["label"]) >= 0).sum()),
        "training_frames": int((y_rows >= 0).sum()),
    }


def cluster_summary(result: Any) -> str:
    """One line for the terminal."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{result.head} on {result.workers} Dask worker(s), cv-{len(result.folds)}: "
            f"video ROC-AUC {fmt(result.video_auc)}, frame ROC-AUC {fmt(result.frame_auc)} "
            f"({result.n_rows} rows x {result.n_columns} in chunks of {result.chunk_rows}; "
            f"{result.seconds:.1f} s)")
