"""The mean of several saved models on a cache: ``evaluate_mean`` scores the cache with each
model (each model's own checks apply) and with their mean, side by side."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fakeprobe.app._result import JsonResult
from fakeprobe.app.heads import EvaluateResult, evaluate
from fakeprobe.classifiers.data import Selection, label_code
from fakeprobe.classifiers.metrics import binary_metrics
from fakeprobe.errors import FakeprobeError
from fakeprobe.training.cv import EvalReport, FoldResult

#: How the ensemble's threshold is made, as the output states it.
THRESHOLD_RULE = "mean of the member thresholds"


@dataclass(frozen=True)
class MeanResult(JsonResult):
    """Each member's evaluation (``models[i]`` gave ``members[i]``) and the ensemble's: the
    mean of the members' video probabilities (and frame probabilities) at the videos (face
    rows) every member scored, at the mean of the member thresholds."""

    models: list[Path]
    members: list[EvaluateResult]
    ensemble: EvalReport
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"members": [{"model": str(m), **r.to_dict()}
                            for m, r in zip(self.models, self.members)],
                "ensemble": {"rule": "mean of the member probabilities",
                             "threshold_rule": THRESHOLD_RULE,
                             "report": self.ensemble.to_dict()},
                "warnings": self.warnings}


def _member_frames(report: EvalReport) -> dict[tuple[str, int, int], float]:
    """A member's frame probabilities by (video id, track, frame index)."""
    rows = report.frame_scores
    ids = [report.video_scores[v]["id"] for v in rows.get("video", [])]
    return {(i, int(t), int(f)): float(s)
            for i, t, f, s in zip(ids, rows["track"], rows["frame_index"], rows["score"])}


def evaluate_mean(model_paths: Sequence[Path | str], cache_path: Path | str,
                  selection: Selection | None = None) -> MeanResult:
    """Score a cache with each saved model and with their mean (see :class:`MeanResult`).

    A member the cache does not suit is refused as ``evaluate`` refuses it."""
    models = [Path(m) for m in model_paths]
    if len(models) < 2:
        raise FakeprobeError("the mean of saved models needs at least two models")
    members = [evaluate(m, cache_path, selection) for m in models]
    reports = [r.report for r in members]
    warnings = [f"{m.name}: {w}" for m, r in zip(models, members) for w in r.warnings]
    by_id = [{v["id"]: v for v in r.video_scores} for r in reports]
    common = sorted(set.intersection(*(set(s) for s in by_id)))
    if not common:
        raise FakeprobeError(f"{cache_path}: no video scored by every model")
    threshold = float(np.mean([r.threshold for r in reports]))
    video_scores = [{**by_id[0][i], "score": float(np.mean([s[i]["score"] for s in by_id])),
                     "threshold": threshold} for i in common]
    labels = np.array([label_code(v["label"]) for v in video_scores])
    scores = np.array([v["score"] for v in video_scores])
    frames = [_member_frames(r) for r in reports]
    keys = sorted(set.intersection(*(set(f) for f in frames)) & {
        k for k in frames[0] if k[0] in set(common)})
    position = {i: n for n, i in enumerate(common)}
    frame_scores = np.array([np.mean([f[k] for f in frames]) for k in keys], dtype=float)
    frame_labels = np.array([labels[position[k[0]]] for k in keys], dtype=int)
    frame_ok = frame_labels >= 0 if len(keys) else np.zeros(0, bool)
    ok = labels >= 0
    counts = Counter(k[0] for k in keys)
    for v in video_scores:
        v["frames"] = counts[v["id"]]
    left_out = sorted({i for s in by_id for i in s} - set(common))
    excluded = {e["id"]: e for r in reports for e in r.excluded}
    excluded.update({i: {"id": i, "reason": "not scored by every model"} for i in left_out})
    ensemble = EvalReport(
        head=f"mean of {len(models)}",
        features=tuple(dict.fromkeys(f for r in reports for f in r.features)),
        aggregation={"members": [r.aggregation for r in reports]},
        protocol="mean of saved models",
        frame=binary_metrics(frame_labels[frame_ok], frame_scores[frame_ok], threshold),
        video=binary_metrics(labels[ok], scores[ok], threshold), threshold=threshold,
        folds=[FoldResult(0, 0, len(common), threshold, 0.0,
                          float(sum(r.predict_seconds for r in reports)),
                          float(max(r.peak_rss_mb for r in reports)))],
        video_scores=video_scores, excluded=sorted(excluded.values(), key=lambda e: e["id"]),
        n_frames=int(frame_ok.sum()),
        frame_scores={"video": [position[k[0]] for k in keys],
                      "frame_index": [k[2] for k in keys], "track": [k[1] for k in keys],
                      "score": frame_scores.tolist(), "threshold": [threshold] * len(keys)},
        notes=[f"threshold {threshold:.3f}: {THRESHOLD_RULE} "
               f"({', '.join(f'{r.threshold:.3f}' for r in reports)})"],
    )
    return MeanResult(models, members, ensemble, warnings)
