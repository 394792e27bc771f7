"""Train and judge heads on a cache: ``fit``, ``compare`` and ``evaluate``, each returning a
result object; a run record and an HTML report are written on request."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fakeprobe.app._result import JsonResult
from fakeprobe.app.outputs import check_outputs, run_outputs
from fakeprobe.app.protocol import Protocol, default_features, feature_sets as as_feature_sets
from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import FrameData, Selection, load_frames
from fakeprobe.classifiers.heads import predict_params
from fakeprobe.classifiers.metrics import binary_metrics
from fakeprobe.classifiers.model import (cache_fingerprint, check_versions, load_model,
                                         save_model)
from fakeprobe.training.cv import (EvalReport, FoldResult, cross_validate, fake_proba, fit_final,
                                   grouped_folds, holdout, train_test)
from fakeprobe.core.resources import measure
from fakeprobe.errors import FakeprobeError

#: The heads ``compare`` tries when none is named.
DEFAULT_COMPARE_HEADS = ("svm", "xgb", "logreg")


@dataclass(frozen=True)
class RunFiles:
    """What a fit or compare wrote beside its result: the run record and the HTML report."""

    run: Path | None = None
    html: Path | None = None
    markdown: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if v else None for k, v in asdict(self).items()}


def _evaluate_head(data: FrameData, head: str, aggregation: Aggregation, protocol: Protocol,
                   folds=None, test: FrameData | None = None) -> EvalReport:
    options = dict(aggregation=aggregation, search=protocol.search, n_iter=protocol.n_iter,
                   random_state=protocol.random_state, head_params=protocol.head_params,
                   roles=protocol.roles(data, test))
    if test is not None:
        return train_test(data, test, head, **options)
    if protocol.holdout:
        return holdout(data, head, test_size=protocol.holdout, **options)
    return cross_validate(data, head, n_splits=protocol.folds, folds=folds, **options)


def _load_test(protocol: Protocol, features: tuple[str, ...]) -> FrameData | None:
    if protocol.eval_cache is None:
        return None
    test = load_frames(protocol.eval_cache, features, protocol.eval_selection or Selection())
    if test.n_videos == 0:
        raise FakeprobeError(f"{protocol.eval_cache}: no labelled item with a face and the "
                             f"features {'+'.join(features)} to test on")
    return test


def write_run(kind: str, reports: Sequence[EvalReport], cache: Path | str, protocol: Protocol,
              selection: Selection, aggregation: Aggregation, excluded: list[dict[str, str]],
              save_run: Path | str | None = None, report: Path | str | None = None) -> RunFiles:
    """The run record (``save_run``, JSON for ``fakeprobe report``) and the HTML report
    (``report``, with its markdown beside it) of a fit or compare."""
    if not (save_run or report):
        return RunFiles()
    from fakeprobe.evaluation.runs import run_record, save_run as write_record

    record = run_record(kind, reports, cache=cache, eval_cache=protocol.eval_cache,
                        selection=selection, protocol=protocol, aggregation=aggregation,
                        excluded=excluded)
    run_path = html = markdown = None
    if save_run:
        run_path = Path(write_record(save_run, record))
    if report:
        from fakeprobe.evaluation.report import write_report

        written = write_report(record, report)
        html, markdown = Path(written.html), Path(written.markdown)
    return RunFiles(run_path, html, markdown)


@dataclass(frozen=True)
class FitResult(JsonResult):
    """The evaluation of a head, and the model fitted on every selected item (``model_path``
    when it was saved)."""

    report: EvalReport
    model_path: Path | None
    final_fit_seconds: float
    provenance: dict[str, Any]
    files: RunFiles = field(default_factory=RunFiles)

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model_path) if self.model_path else None,
                "final_fit_seconds": self.final_fit_seconds, "report": self.report.to_dict()}


def fit(cache_path: Path | str, head: str = "logreg", out: Path | str | None = None, *,
        features: Sequence[str] = (), selection: Selection | None = None,
        aggregation: Aggregation | None = None, protocol: Protocol | None = None,
        save_run: Path | str | None = None, report: Path | str | None = None,
        force: bool = False) -> FitResult:
    """Evaluate ``head`` by the protocol (grouped 5-fold CV by default), then fit it on every
    selected item and save it to ``out`` (a model file; none when ``None``).

    ``features``: cached feature sets, concatenated (``"a+b"`` is ``["a", "b"]``; default:
    the cache's first backbone). ``save_run``/``report``: also write the run record and an
    HTML report. Outputs are checked before any work (``force`` replaces files of another
    kind)."""
    cache_path = Path(cache_path)
    out = Path(out) if out is not None else None
    selection = selection or Selection()
    aggregation = aggregation or Aggregation()
    protocol = protocol or Protocol()
    check_outputs([(out, "model", "--out"), *run_outputs(save_run, report)],
                  [cache_path, protocol.eval_cache], force)
    features = tuple(x for f in features for x in f.split("+")) or default_features(cache_path)
    data = load_frames(cache_path, features, selection, augmented=True)  # augmented rows train
    result = _evaluate_head(data, head, aggregation, protocol,
                            test=_load_test(protocol, features))
    # the final model takes the most frequent hyperparameters chosen in the folds (the
    # earliest fold's on a tie: a Bayesian search rarely picks the same values twice)
    chosen = [tuple(sorted(f.params.items())) for f in result.folds if f.params]
    params = dict(max(chosen, key=chosen.count)) if chosen else {}
    pipeline, seconds = fit_final(data, head, params=params, random_state=protocol.random_state,
                                  head_params=protocol.head_params,
                                  train=protocol.roles(data).train)
    from datetime import datetime, timezone

    from fakeprobe.core.provenance import environment
    from fakeprobe.features.cache import CacheReader, summarize

    with CacheReader(cache_path) as cache:
        extractor_config = cache.config.to_dict()
    provenance = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "protocol_options": protocol.to_dict(),
        "failures": summarize(cache_path)["failures"],
        "head": head, "features": list(features), "feature_configs": data.feature_configs,
        "extractor_config": extractor_config, "aggregation": asdict(aggregation),
        "threshold": result.threshold, "params": params, "smote": protocol.smote,
        "selection": selection.to_dict(), "train_fakes": protocol.train_fakes,
        "train_selection": (protocol.train_selection.to_dict()
                            if protocol.train_selection else None),
        "protocol": result.protocol, "cv_video": result.video, "cv_frame": result.frame,
        "training_cache": cache_fingerprint(cache_path),
        "training_items": data.n_videos, "training_frames": int(len(data.y)),
    }
    if out is not None:
        save_model(out, pipeline, provenance, report=result.to_dict(frames=True))
    files = write_run("fit", [result], cache_path, protocol, selection, aggregation,
                      result.excluded, save_run, report)
    return FitResult(result, out, seconds, provenance, files)


@dataclass(frozen=True)
class CompareResult(JsonResult):
    """One evaluation per head and feature combination, on identical folds; ``excluded``: the
    items left out (no face, or a feature set missing), with the reason."""

    reports: list[EvalReport]
    excluded: list[dict[str, str]] = field(default_factory=list)
    files: RunFiles = field(default_factory=RunFiles)

    def sorted(self) -> list[EvalReport]:
        """The evaluations, best video ROC-AUC first."""
        return sorted(self.reports, key=lambda r: -(r.video["roc_auc"] or -1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.sorted()], "excluded": self.excluded}


def compare(cache_path: Path | str, heads: Sequence[str] = DEFAULT_COMPARE_HEADS,
            feature_sets: Sequence[str | Sequence[str]] = (), *,
            selection: Selection | None = None, aggregation: Aggregation | None = None,
            protocol: Protocol | None = None, save_run: Path | str | None = None,
            report: Path | str | None = None, force: bool = False,
            progress: Callable[[str], None] | None = None) -> CompareResult:
    """Every head on every feature combination (``"a+b"`` or ``("a", "b")``; default: the
    cache's first backbone), on identical folds.

    Folds are made once, over the items usable with every combination, so that rows of the
    table differ only by head and features. ``progress`` is told each head as it starts.
    """
    cache_path = Path(cache_path)
    selection = selection or Selection()
    aggregation = aggregation or Aggregation()
    protocol = protocol or Protocol()
    check_outputs(run_outputs(save_run, report), [cache_path, protocol.eval_cache], force)
    combos = as_feature_sets(feature_sets) or [default_features(cache_path)]
    datasets = {f: load_frames(cache_path, f, selection, augmented=True) for f in combos}
    common = set.intersection(*(set(d.videos["id"]) for d in datasets.values()))
    excluded = {e["id"]: e for d in datasets.values() for e in d.excluded}
    for name, data in datasets.items():
        keep = np.flatnonzero(np.isin(data.videos["id"], sorted(common)))
        order = keep[np.argsort(data.videos["id"][keep])]
        datasets[name] = data.subset_videos(order)
    reference = datasets[combos[0]]
    folds = None
    if not protocol.holdout and protocol.eval_cache is None:
        folds = grouped_folds(reference, protocol.folds, protocol.random_state)
    reports = []
    for features in combos:
        test = _load_test(protocol, features)
        for head in heads or DEFAULT_COMPARE_HEADS:
            if progress:
                progress(f"{head} on {'+'.join(features)}")
            reports.append(_evaluate_head(datasets[features], head, aggregation, protocol,
                                          folds=folds, test=test))
    left_out = sorted(excluded.values(), key=lambda e: e["id"])
    files = write_run("compare", reports, cache_path, protocol, selection, aggregation,
                      left_out, save_run, report)
    return CompareResult(reports, left_out, files)


@dataclass(frozen=True)
class EvaluateResult(JsonResult):
    """A saved model's scores on a cache at its threshold, and warnings (extraction that
    differs from the training cache, library versions). Unpacks as ``report, warnings``."""

    report: EvalReport
    warnings: list[str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.report, self.warnings))

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report.to_dict(), "warnings": self.warnings}


def _frame_scores(data: FrameData, scores: np.ndarray, videos: np.ndarray,
                  threshold: float) -> dict[str, list]:
    """The face rows of the scored videos, ``video`` their position in ``video_scores``."""
    scored = ~np.isnan(videos)
    position = np.cumsum(scored) - 1
    rows = np.flatnonzero(scored[data.video])
    return {"video": position[data.video[rows]].tolist(),
            "frame_index": data.frame_index[rows].tolist(),
            "timestamp": data.timestamp[rows].tolist(), "track": data.track[rows].tolist(),
            "score": scores[rows].tolist(), "threshold": [threshold] * len(rows)}


def evaluate(model_path: Path | str, cache_path: Path | str,
             selection: Selection | None = None) -> EvaluateResult:
    """Score a cache with a saved model at its threshold. Loading a model file runs no code
    from it (skops data, trusted types only)."""
    model = load_model(model_path)
    warnings = [f"extraction differs: {w}" for w in model.check_cache(cache_path)]
    data = load_frames(cache_path, model.features, selection or Selection())
    if not len(data.y):
        raise FakeprobeError(f"{cache_path}: no usable item for this model")
    with measure() as usage:
        scores = fake_proba(model.pipeline, data.X, **predict_params(
            model.pipeline, data.video, data.track, data.frame_index))
    aggregation = model.aggregation
    videos = aggregation.video_scores(scores, data.video, data.frame_index, data.track,
                                      data.n_videos)
    labels = data.video_labels
    ok = ~np.isnan(videos) & (labels >= 0)
    frame_ok = data.y >= 0
    report = EvalReport(
        head=model.provenance["head"], features=model.features,
        aggregation=model.provenance["aggregation"], protocol="saved model",
        frame=binary_metrics(data.y[frame_ok], scores[frame_ok], model.threshold),
        video=binary_metrics(labels[ok], videos[ok], model.threshold),
        threshold=model.threshold,
        folds=[FoldResult(0, model.provenance.get("training_items", 0), data.n_videos,
                          model.threshold, 0.0, usage.seconds, usage.peak_rss_mb)],
        video_scores=[{"id": str(data.videos["id"][i]), "label": str(data.videos["label"][i]),
                       "group": str(data.videos["group"][i]),
                       "dataset": str(data.videos["dataset"][i]),
                       "method": str(data.videos["method"][i]), "score": float(videos[i]),
                       "threshold": model.threshold, "fold": 0,
                       "frames": int((data.video == i).sum())}
                      for i in np.flatnonzero(~np.isnan(videos))],
        excluded=data.excluded, n_frames=int(frame_ok.sum()),
        frame_scores=_frame_scores(data, scores, videos, model.threshold),
    )
    return EvaluateResult(report, warnings + check_versions(model))
