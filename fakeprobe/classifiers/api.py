"""What the commands do: fit, compare, evaluate and predict, each returning a result object."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import FrameData, Selection, load_frames
from fakeprobe.classifiers.heads import predict_params
from fakeprobe.classifiers.metrics import binary_metrics
from fakeprobe.classifiers.model import cache_fingerprint, check_versions, load_model, save_model
from fakeprobe.core.resources import measure
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.errors import FakeprobeError
from fakeprobe.features.cache import CacheReader
from fakeprobe.training.cv import (EvalReport, FoldResult, Roles, cross_validate, fake_proba,
                                   fit_final, grouped_folds, holdout, train_test)
from fakeprobe.training.search import SEARCH_MODES


def default_features(cache_path: Path | str) -> tuple[str, ...]:
    """The feature set a command uses when none is named: the cache's first backbone."""
    with CacheReader(cache_path) as cache:
        names = [b for b in cache.config.backbones if b in cache.feature_sets]
        names = names or list(cache.feature_sets)
    if not names:
        raise FakeprobeError(f"{cache_path}: holds no feature set yet")
    return (names[0],)


@dataclass
class Protocol:
    """How a head is judged: grouped k-fold CV (default), a grouped hold-out, or another cache."""

    folds: int = 5
    holdout: float | None = None
    eval_cache: Path | None = None
    eval_selection: Selection | None = None
    search: str | None = None
    n_iter: int = 10
    random_state: int = 0
    smote: bool = False
    #: Only items this selection keeps are trained on (all are still split by group and
    #: scored): train on one dataset, read every other one as out-of-domain.
    train_selection: Selection | None = None
    #: Which fakes train: ``all``, ``real`` (true fakes only) or ``self-blend`` (pseudo-fakes
    #: made from the reals only). Pseudo-fakes are never scored.
    train_fakes: str = "all"
    #: Score pseudo-fakes too (data with no true fakes, such as the offline sample).
    score_self_blend: bool = False

    def __post_init__(self) -> None:
        if self.search is not None and self.search not in SEARCH_MODES:
            raise FakeprobeError(f"search must be one of {', '.join(SEARCH_MODES)}, got "
                                 f"{self.search!r}")
        if self.n_iter < 1:
            raise FakeprobeError(f"n_iter must be at least 1, got {self.n_iter}")
        if self.train_fakes not in TRAIN_FAKES:
            raise FakeprobeError(f"train fakes must be one of {', '.join(TRAIN_FAKES)}, got "
                                 f"{self.train_fakes!r}")

    @property
    def head_params(self) -> dict[str, Any]:
        return {"smote": True} if self.smote else {}

    def roles(self, data: FrameData, target: FrameData | None = None) -> Roles:
        """Which items of ``data`` may train and which of ``target`` are scored."""
        target = target if target is not None else data
        videos = data.videos
        label = data.video_labels
        pseudo = videos["method"] == SELF_BLEND_METHOD
        train = np.ones(data.n_videos, bool)
        if self.train_selection is not None:
            train &= np.array([self.train_selection.keeps(d, m, lab, g) for d, m, lab, g in
                               zip(videos["dataset"], videos["method"], videos["label"],
                                   videos["group"])], bool)
        if self.train_fakes == "real":
            train &= ~pseudo
        elif self.train_fakes == "self-blend":
            train &= ~((label == 1) & ~pseudo)
            if not (train & pseudo).any():
                raise FakeprobeError("--train-fakes self-blend: the training items hold no "
                                     "pseudo-fake (extract with --self-blend)")
        if len(np.unique(label[train & (label >= 0)])) < 2:
            raise FakeprobeError("the items allowed to train hold a single class")
        test = np.ones(target.n_videos, bool)
        if not self.score_self_blend:
            test &= target.videos["method"] != SELF_BLEND_METHOD
            if not (target.video_labels[test] == 1).any() and (~test).any():
                raise FakeprobeError("the only fakes to score are pseudo-fakes (self_blend); "
                                     "add true fakes, or pass --score-self-blend to measure "
                                     "how well blends are found")
        return Roles(train, test)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("eval_cache",):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


#: Choices of :attr:`Protocol.train_fakes`.
TRAIN_FAKES = ("all", "real", "self-blend")


def _evaluate_head(data: FrameData, head: str, aggregation: Aggregation, protocol: Protocol,
                   features: tuple[str, ...], folds=None, test: FrameData | None = None
                   ) -> EvalReport:
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


@dataclass
class FitResult:
    report: EvalReport
    model_path: Path | None
    final_fit_seconds: float
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model_path) if self.model_path else None,
                "final_fit_seconds": self.final_fit_seconds, "report": self.report.to_dict()}


def fit(cache_path: Path, head: str, out: Path | None, *, features: Sequence[str] = (),
        selection: Selection | None = None, aggregation: Aggregation | None = None,
        protocol: Protocol | None = None) -> FitResult:
    """Evaluate ``head`` by the protocol, then fit it on every selected item and save it."""
    features = tuple(features) or default_features(cache_path)
    selection = selection or Selection()
    aggregation = aggregation or Aggregation()
    protocol = protocol or Protocol()
    data = load_frames(cache_path, features, selection)
    report = _evaluate_head(data, head, aggregation, protocol, features,
                            test=_load_test(protocol, features))
    # the final model takes the most frequent hyperparameters chosen in the folds (the
    # earliest fold's on a tie: a Bayesian search rarely picks the same values twice)
    chosen = [tuple(sorted(f.params.items())) for f in report.folds if f.params]
    params = dict(max(chosen, key=chosen.count)) if chosen else {}
    pipeline, seconds = fit_final(data, head, params=params, random_state=protocol.random_state,
                                  head_params=protocol.head_params,
                                  train=protocol.roles(data).train)
    from datetime import datetime, timezone

    from fakeprobe.core.provenance import environment
    from fakeprobe.features.cache import summarize

    with CacheReader(cache_path) as cache:
        extractor_config = cache.config.to_dict()
    provenance = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "protocol_options": protocol.to_dict(),
        "failures": summarize(cache_path)["failures"],
        "head": head, "features": list(features), "feature_configs": data.feature_configs,
        "extractor_config": extractor_config, "aggregation": asdict(aggregation),
        "threshold": report.threshold, "params": params, "smote": protocol.smote,
        "selection": selection.to_dict(), "train_fakes": protocol.train_fakes,
        "train_selection": (protocol.train_selection.to_dict()
                            if protocol.train_selection else None),
        "protocol": report.protocol, "cv_video": report.video, "cv_frame": report.frame,
        "training_cache": cache_fingerprint(cache_path),
        "training_items": data.n_videos, "training_frames": int(len(data.y)),
    }
    if out is not None:
        save_model(out, pipeline, provenance, report=report.to_dict(frames=True))
    return FitResult(report, out, seconds, provenance)


@dataclass
class CompareResult:
    reports: list[EvalReport]
    excluded: list[dict[str, str]] = field(default_factory=list)

    def sorted(self) -> list[EvalReport]:
        return sorted(self.reports, key=lambda r: -(r.video["roc_auc"] or -1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.sorted()], "excluded": self.excluded}


def compare(cache_path: Path, heads: Sequence[str], feature_sets: Sequence[tuple[str, ...]],
            *, selection: Selection | None = None, aggregation: Aggregation | None = None,
            protocol: Protocol | None = None,
            progress: Callable[[str], None] | None = None) -> CompareResult:
    """Every head on every feature combination, on identical folds.

    Folds are made once, over the items usable with every combination, so that rows of the
    table differ only by head and features.
    """
    selection = selection or Selection()
    aggregation = aggregation or Aggregation()
    protocol = protocol or Protocol()
    feature_sets = [tuple(f) for f in feature_sets] or [default_features(cache_path)]
    datasets = {f: load_frames(cache_path, f, selection) for f in feature_sets}
    common = set.intersection(*(set(d.videos["id"]) for d in datasets.values()))
    excluded = {e["id"]: e for d in datasets.values() for e in d.excluded}
    for name, data in datasets.items():
        keep = np.flatnonzero(np.isin(data.videos["id"], sorted(common)))
        order = keep[np.argsort(data.videos["id"][keep])]
        datasets[name] = data.subset_videos(order)
    reference = datasets[feature_sets[0]]
    folds = None
    if not protocol.holdout and protocol.eval_cache is None:
        folds = grouped_folds(reference, protocol.folds, protocol.random_state)
    reports = []
    for features in feature_sets:
        test = _load_test(protocol, features)
        for head in heads:
            if progress:
                progress(f"{head} on {'+'.join(features)}")
            reports.append(_evaluate_head(datasets[features], head, aggregation, protocol,
                                          features, folds=folds, test=test))
    return CompareResult(reports, sorted(excluded.values(), key=lambda e: e["id"]))


def evaluate(model_path: Path, cache_path: Path, selection: Selection | None = None
             ) -> tuple[EvalReport, list[str]]:
    """Score a cache with a saved model at its threshold; also return warnings (sampling
    that differs from the training cache, library versions)."""
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
    )
    return report, warnings + check_versions(model)


@dataclass
class Prediction:
    id: str
    path: str
    status: str
    score: float | None
    label: str | None
    frames_used: int
    timeline: list[dict[str, float]]
    error: str = ""


@dataclass
class PredictResult:
    model: str
    threshold: float
    predictions: list[Prediction]
    seconds: float
    warnings: list[str]
    model_name: str = ""
    bundled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_name": self.model_name, "bundled": self.bundled,
                "threshold": self.threshold, "seconds": self.seconds,
                "warnings": self.warnings, "predictions": [asdict(p) for p in self.predictions]}


def predict(model_path: Path | None, inputs: Iterable[Path], *,
            cache_path: Path | None = None, workers: int = 2, device: str = "auto",
            reporter=None, face_crops: bool = False) -> PredictResult:
    """Extract ``inputs`` with the model's extractor config, then score every item.

    ``model_path`` ``None``: the detector bundled with fakeprobe
    (:func:`fakeprobe.weights.bundled_model_path`, checked against its pinned SHA-256).
    ``face_crops``: the images are face crops (see ``ExtractorConfig.face_crops``); a model
    never imposes it, since a model trained on crops may score whole photos and videos.
    Items that could not be read, or show no face, get no score and say why.
    To predict many times with one model (a server), keep a :class:`Predictor`.
    """
    predictor = Predictor(model_path, workers=workers, device=device, face_crops=face_crops)
    return predictor.predict(inputs, cache_path=cache_path, reporter=reporter)


class Predictor:
    """A model and its extractor, loaded once, that :meth:`predict` reuses call after call.

    The backbones are built on the first call (or by :meth:`warm_up`) and kept, so a second
    call pays no TensorFlow start-up; every call runs exactly what :func:`predict` runs, and
    calls are serialized (one extraction at a time). ``keep_crops``: store aligned face crops
    of that side in the cache (0: as the model's extractor config says); crops change no
    score, they let a caller show the faces afterwards.
    """

    def __init__(self, model_path: Path | None = None, *, workers: int = 2,
                 device: str = "auto", face_crops: bool = False, keep_crops: int = 0) -> None:
        import threading

        from fakeprobe.pipeline.run import Extractor
        from fakeprobe.weights import BUNDLED_MODEL_NAME, bundled_model_path

        self.bundled = model_path is None
        self.model_path = Path(bundled_model_path() if self.bundled else model_path)
        self.model_name = BUNDLED_MODEL_NAME if self.bundled else self.model_path.name
        self.model = load_model(self.model_path)
        configs = self.model.provenance["feature_configs"]
        self.derived = tuple(f for f in self.model.features
                             if "derived_from" in configs.get(f, {}))
        bases = {configs[f]["derived_from"] for f in self.derived} - {"frames"}
        backbones = tuple(dict.fromkeys([f for f in self.model.features if f not in self.derived]
                                        + sorted(bases)))
        config = replace(self.model.extractor_config, backbones=backbones, face_crops=face_crops)
        if keep_crops:
            config = replace(config, keep_crops=max(keep_crops, config.keep_crops))
        self.config = config
        self.extractor = Extractor(config, workers=workers, device=device)
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Build the detector and backbones now and run each once (a server's start-up)."""
        with self._lock:
            self.extractor.warm_up()

    def predict(self, inputs: Iterable[Path], *, cache_path: Path | None = None,
                reporter=None) -> PredictResult:
        """Extract and score ``inputs`` (see :func:`predict`)."""
        with self._lock:
            return self._predict(list(inputs), cache_path, reporter)

    def _predict(self, inputs: list[Path], cache_path: Path | None, reporter) -> PredictResult:
        model = self.model
        with measure() as usage, tempfile.TemporaryDirectory(prefix="fakeprobe-") as tmp:
            cache = Path(cache_path or Path(tmp) / "predict.h5")
            summary = self.extractor.run(inputs, cache, reporter=reporter)
            if not cache.exists():
                raise FakeprobeError("no item could be read: " + "; ".join(
                    f"{f['id']}: {f['error']}" for f in summary.failures[:5]))
            if self.derived:  # video-level sets computed from the rows, as at training
                from fakeprobe.features.temporal import derive

                derive(cache, self.derived)
            model.check_cache(cache)
            data = load_frames(cache, model.features, Selection(labelled_only=False))
            with CacheReader(cache) as reader:
                everything = reader.videos()
            scores = (fake_proba(model.pipeline, data.X, **predict_params(
                model.pipeline, data.video, data.track, data.frame_index))
                if len(data.X) else np.zeros(0))
        videos = model.aggregation.video_scores(scores, data.video, data.frame_index, data.track,
                                                data.n_videos)
        position = {vid: i for i, vid in enumerate(data.videos["id"])}
        predictions = []
        for k, vid in enumerate(everything["id"]):
            i = position.get(vid)
            if i is None or np.isnan(videos[i]):
                status = everything["status"][k]
                predictions.append(Prediction(
                    str(vid), str(everything["path"][k]),
                    status if status != "ok" else "no_score", None, None, 0, [],
                    str(everything["error"][k]) or
                    ("no face in any sampled frame" if status == "no_face" else "")))
                continue
            rows = np.flatnonzero(data.video == i)
            rows = rows[np.lexsort((data.frame_index[rows], data.track[rows]))]
            timeline = [{"frame": int(data.frame_index[r]), "time": float(data.timestamp[r]),
                         "track": int(data.track[r]), "score": float(scores[r])} for r in rows]
            score = float(videos[i])
            predictions.append(Prediction(
                str(vid), str(everything["path"][k]), "ok", score,
                "fake" if score >= model.threshold else "real", len(rows), timeline,
                str(everything["error"][k])))  # a caveat, e.g. a truncated video
        return PredictResult(str(self.model_path), model.threshold, predictions, usage.seconds,
                             check_versions(model), self.model_name, self.bundled)
