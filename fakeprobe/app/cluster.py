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
                   memory_limit: str | int | None = None) -> ClusterFitResult:
    """Grouped cross-validation of ``head`` on a Dask cluster, the features read
    ``chunk_rows`` rows at a time: a cache larger than memory. ``xgb`` trains through
    ``xgboost.dask``; ``logreg`` is fitted out of core (``SGDClassifier(loss="log_loss")``
    updated chunk by chunk), so its numbers are close to, not equal to, lbfgs's. The
    protocol's folds and seed are used; its other options (search, hold-out, --eval, SMOTE,
    training roles) and a model file are not available on a cluster and are refused."""
    from fakeprobe.distributed import require_dask

    protocol = protocol or Protocol()
    if head not in ("xgb", "logreg"):
        raise InvalidOption(f"--engine dask trains xgb and logreg only, not {head}",
                            "--engine")
    refused = [name for name, given in (
        ("--out", out is not None), ("--holdout", protocol.holdout is not None),
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
    features = tuple(x for f in features for x in f.split("+")) or default_features(cache_path)
    run = cross_validate_xgb if head == "xgb" else cross_validate_logreg
    return ClusterFitResult(run(
        cache_path, features, selection=selection, n_splits=protocol.folds,
        random_state=protocol.random_state, chunk_rows=chunk_rows or CHUNK_ROWS,
        address=address, workers=workers, memory_limit=memory_limit))


def cluster_summary(result: Any) -> str:
    """One line for the terminal."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{result.head} on {result.workers} Dask worker(s), cv-{len(result.folds)}: "
            f"video ROC-AUC {fmt(result.video_auc)}, frame ROC-AUC {fmt(result.frame_auc)} "
            f"({result.n_rows} rows x {result.n_columns} in chunks of {result.chunk_rows}; "
            f"{result.seconds:.1f} s)")
