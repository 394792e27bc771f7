"""Score new videos and images: a model (or the bundled detector) and its extractor, composed.

:func:`predict` runs the extractor with the model's settings, then the model's head and
frame-to-video rule; a :class:`Predictor` keeps both loaded for many calls (the web server).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fakeprobe.app._result import JsonResult
from fakeprobe.errors import FakeprobeError


@dataclass(frozen=True)
class Prediction:
    """One item's verdict: ``score`` is the fake probability (``None`` when the item could not
    be scored: ``status`` and ``error`` say why), ``timeline`` the per-frame scores."""

    id: str
    path: str
    status: str
    score: float | None
    label: str | None
    frames_used: int
    timeline: list[dict[str, float]]
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PredictResult(JsonResult):
    """Every item's :class:`Prediction`, the model and its threshold."""

    model: str
    threshold: float
    predictions: list[Prediction]
    seconds: float
    warnings: list[str]
    model_name: str = ""
    bundled: bool = False
    #: CSV files written beside the result (``csv``, ``timeline_csv``), when asked for.
    files: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_name": self.model_name, "bundled": self.bundled,
                "threshold": self.threshold, "seconds": self.seconds,
                "warnings": self.warnings, "predictions": [asdict(p) for p in self.predictions]}


def is_model_file(path: Path | str) -> bool:
    """Whether ``path`` is a model file from ``fit`` (its provenance reads; no code runs)."""
    from fakeprobe.classifiers.model import read_provenance

    try:
        return Path(path).is_file() and bool(read_provenance(path))
    except FakeprobeError:
        return False


def predict(model_path: Path | str | None, inputs: Iterable[Path | str] | Path | str, *,
            cache_path: Path | str | None = None, workers: int = 2, device: str = "auto",
            reporter=None, face_crops: bool = False, csv: Path | str | None = None,
            timeline_csv: Path | str | None = None, force: bool = False) -> PredictResult:
    """Extract ``inputs`` with the model's extractor config, then score every item.

    ``model_path`` ``None``: the detector bundled with fakeprobe
    (:func:`fakeprobe.weights.bundled_model_path`, checked against its pinned SHA-256).
    ``face_crops``: the images are face crops (see ``ExtractorConfig.face_crops``); a model
    never imposes it, since a model trained on crops may score whole photos and videos.
    Items that could not be read, or show no face, get no score and say why.
    ``csv``/``timeline_csv``: also write one row per item / per scored frame (atomically);
    these and ``cache_path`` are checked before any work (``force`` replaces files of another
    kind). To predict many times with one model (a server), keep a :class:`Predictor`.
    """
    from fakeprobe.app.outputs import check_outputs, write_predictions_csv, write_timeline_csv

    inputs = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    check_outputs([(csv, "csv", "--csv"), (timeline_csv, "csv", "--timeline-csv"),
                   (cache_path, "cache", "--cache")], [model_path, *inputs], force)
    predictor = Predictor(model_path, workers=workers, device=device, face_crops=face_crops)
    result = predictor.predict(inputs, cache_path=cache_path, reporter=reporter)
    files = {}
    if csv:
        files["csv"] = str(write_predictions_csv(result, csv))
    if timeline_csv:
        files["timeline_csv"] = str(write_timeline_csv(result, timeline_csv))
    return replace(result, files=files) if files else result


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

        from fakeprobe.classifiers.model import load_model
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
        # augmented rows only train: a video to score gets none
        config = replace(self.model.extractor_config, backbones=backbones, face_crops=face_crops,
                         augment="")
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
        from fakeprobe.classifiers.data import Selection, load_frames
        from fakeprobe.classifiers.heads import predict_params
        from fakeprobe.classifiers.sequence import frame_scores
        from fakeprobe.classifiers.model import check_versions
        from fakeprobe.training.cv import fake_proba
        from fakeprobe.core.resources import measure
        from fakeprobe.features.cache import CacheReader

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
            # the timeline's per-frame scores: a temporal head's prefix scores (see
            # fakeprobe.classifiers.sequence.frame_scores), else the row scores
            per_frame = (frame_scores(model.pipeline, data.X, data.video, data.track,
                                      data.frame_index) if len(data.X) else None)
            frame_level = scores if per_frame is None else per_frame
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
                         "track": int(data.track[r]), "score": float(frame_level[r])}
                        for r in rows]
            score = float(videos[i])
            predictions.append(Prediction(
                str(vid), str(everything["path"][k]), "ok", score,
                "fake" if score >= model.threshold else "real", len(rows), timeline,
                str(everything["error"][k])))  # a caveat, e.g. a truncated video
        return PredictResult(str(self.model_path), model.threshold, predictions, usage.seconds,
                             check_versions(model), self.model_name, self.bundled)
