"""Heads past one machine: ``fit_on_cluster`` evaluates the XGBoost head (through
``xgboost.dask``) or a logistic head (out of core) on a cache read in chunks
(``fit-xgb --engine dask``, ``fit-logreg --engine dask``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
    if head not in ("xgb", "logreg"):
        raise InvalidOption(f"--engine dask trains xgb and logreg only, not {head}",
                            "--engine")
    refused = [name for name, given in (
        ("--holdout", protocol.holdout is not None),
        ("--eval", protocol.eval_cache is not None), ("--search", protocol.search is not None),
        ("--smote", protocol.smote),
        ("--train-dataset/--train-method", protocol.train_selection is not None),
        ("--train-fakes", protocol.train_fakes != "all")) if given]
    if refused:
        raise InvalidOption(f"--engine dask runs grouped cross-validation only: drop "
                            f"{', '.join(refused)}", "--engine")
    require_dask("dask.dataframe", "xgboost.dask")
    from fakeprobe.distributed.heads import (CHUNK_ROWS, cross_validate_logreg,
                                             cross_validate_xgb)

    cache_path = Path(cache_path)
    if out is not None:
        from fakeprobe.app.outputs import check_outputs

        check_outputs([(Path(out), "model", "--out")], [cache_path], force)
    features = tuple(x for f in features for x in f.split("+")) or default_features(cache_path)
    run = cross_validate_xgb if head == "xgb" else cross_validate_logreg
    report = run(cache_path, features, selection=selection, n_splits=protocol.folds,
                 random_state=protocol.random_state, chunk_rows=chunk_rows or CHUNK_ROWS,
                 address=address, workers=workers, memory_limit=memory_limit,
                 final=out is not None)
    if out is not None:
        from fakeprobe.classifiers.model import save_model

        save_model(out, report.model, cluster_provenance(report, cache_path, selection,
                                                         protocol))
    return ClusterFitResult(report)


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
