"""Explanations: which frames, and which regions of their faces, drove a video's score.

Two questions, two answers:

* **which frames**: the model's per-frame fake scores in time order (the *timeline*, with the
  model's temporal smoothing as :func:`fakeprobe.classifiers.aggregate.smooth` applies it before
  aggregation), and the ``top_k`` frames that score highest;
* **which regions**: *occlusion sensitivity* on each top frame's aligned face crop
  (:mod:`fakeprobe.evaluation.occlusion`), each occluded copy scored through the whole model
  (:class:`~fakeprobe.evaluation.scoring.ModelScorer`), the hottest named face regions
  (:mod:`fakeprobe.evaluation.regions`) and one figure per item
  (:mod:`fakeprobe.evaluation.explain_figure`).

The crops come from :func:`fakeprobe.features.crops.row_crops`: the cache's stored crops when
every backbone's crop can be cut from them, otherwise re-aligned from the re-read frames at the
smallest geometry that covers every backbone. This module composes those parts for one item
(:func:`explain_video`) and for many (:func:`explain_items`, the ``explain`` command); the names
of the parts stay importable from here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.classifiers.aggregate import smooth
from fakeprobe.classifiers.heads import predict_params
from fakeprobe.classifiers.model import Model, check_versions, load_model
from fakeprobe.classifiers.sequence import frame_scores
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import ConfigError, FakeprobeError
from fakeprobe.evaluation.explain_figure import (HEAT_UNITS, MIN_HEAT_SCALE, OVERLAY_BLUR_FRACTION,
                                                 overlay, render_explanation, save_explanation)
from fakeprobe.evaluation.occlusion import (DEFAULT_SPACE, FILLS, PATCH_FRACTION, SPACES,
                                            STRIDE_FRACTION, ScoreFn, default_patch, log_odds,
                                            occlusion_map, occlusion_maps)
from fakeprobe.evaluation.regions import REGIONS, face_regions, hottest_regions
from fakeprobe.evaluation.runs import finite
from fakeprobe.evaluation.scoring import ModelScorer, backbone_specs, covering_spec
from fakeprobe.features.cache import CacheReader
from fakeprobe.features.crops import CropError, row_crops, stored_spec
from fakeprobe.training.cv import fake_proba

#: Frames explained per video by default.
DEFAULT_TOP_K = 4


@dataclass
class FrameExplanation:
    """One of the top frames: where it is, its score, its face crop and what drove the score."""

    rank: int
    row: int  # row of the cache
    frame_index: int
    time: float  # seconds, NaN for images and frame folders
    track: int
    score: float  # the model's score of the cached features
    crop_score: float  # the same face re-scored from ``crop`` (the heatmap's baseline)
    crop: np.ndarray  # (S, S, 3) uint8 RGB at the explanation's crop geometry
    heatmap: np.ndarray  # (S, S) float32, baseline minus occluded P(fake)
    overlay: np.ndarray  # (S, S, 3) uint8 RGB
    regions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "frame": self.frame_index, "time": self.time,
                "track": self.track, "score": self.score, "crop_score": self.crop_score,
                "heat_max": float(self.heatmap.max()), "heat_min": float(self.heatmap.min()),
                "regions": [r["region"] for r in self.regions],
                "region_heat": {r["region"]: r["heat"] for r in self.regions}}


@dataclass
class VideoExplanation:
    """Why a model scored one item as it did (see the module docstring)."""

    id: str
    path: str
    kind: str
    true_label: str  # from the cache: real, fake or ''
    score: float  # the video score, aggregated as the model does
    label: str  # fake or real at the model's threshold
    threshold: float
    aggregation: dict[str, Any]
    features: tuple[str, ...]
    timeline: dict[str, np.ndarray]  # frame, time, track, score, smoothed (per track): by time
    top_frames: list[FrameExplanation]
    crop_spec: CropSpec
    crop_source: str  # "cache" (stored crops) or "media" (frames re-read and re-aligned)
    patch: int
    stride: int
    fill: str
    space: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def heat_scale(self) -> float:
        """The heat shown at full colour in every overlay of this item."""
        return max([MIN_HEAT_SCALE[self.space],
                    *(float(f.heatmap.max()) for f in self.top_frames)])

    def to_dict(self) -> dict[str, Any]:
        timeline = [{"frame": int(f), "time": float(t), "track": int(k), "score": float(s),
                     "smoothed": float(m)}
                    for f, t, k, s, m in zip(*(self.timeline[c] for c in
                                               ("frame", "time", "track", "score", "smoothed")))]
        return {"id": self.id, "path": self.path, "kind": self.kind,
                "true_label": self.true_label, "score": self.score, "label": self.label,
                "threshold": self.threshold, "aggregation": self.aggregation,
                "features": list(self.features), "frames_scored": len(timeline),
                "crop": {"size": self.crop_spec.size, "margin": self.crop_spec.margin,
                         "source": self.crop_source},
                "occlusion": {"patch": self.patch, "stride": self.stride, "fill": self.fill,
                              "space": self.space, "units": HEAT_UNITS[self.space]},
                "seconds": self.seconds, "warnings": self.warnings,
                "top_frames": [f.to_dict() for f in self.top_frames], "timeline": timeline}


def _find_item(videos: dict[str, np.ndarray], video_id: str, cache_path: Path) -> int:
    hits = np.flatnonzero(videos["id"] == video_id)
    if len(hits):
        return int(hits[0])
    import difflib

    close = difflib.get_close_matches(video_id, list(videos["id"]), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (list them with `fakeprobe info`)"
    raise FakeprobeError(f"{cache_path}: no item {video_id!r}{hint}")


def _check_explainable(videos: dict[str, np.ndarray], i: int) -> None:
    status = videos["status"][i]
    if status == "no_face":
        raise FakeprobeError(f"{videos['id'][i]}: no face in any sampled frame, nothing to "
                             "explain")
    if status != "ok":
        raise FakeprobeError(f"{videos['id'][i]}: {status} ({videos['error'][i]}), nothing to "
                             "explain")


def explain_video(model_path: Path | str | Model, cache_path: Path | str, video_id: str, *,
                  top_k: int = DEFAULT_TOP_K, patch: int | None = None,
                  stride: int | None = None, fill: str = "blur", space: str = DEFAULT_SPACE,
                  scorer: ModelScorer | None = None, device: str = "auto",
                  weights: dict[str, str] | None = None) -> VideoExplanation:
    """Explain one item of a cache (a video, a frame folder or an image).

    The frame scores come from the cached features (exactly what ``fakeprobe evaluate`` sees);
    the ``top_k`` highest-scoring face rows are then explained by :func:`occlusion_map` through
    ``scorer`` (default: a :class:`ModelScorer` of the model; pass one to reuse its backbones
    over many items). Crops come from the cache when every backbone's crop can be cut from them,
    else the frames are re-read from the item's path and aligned with the cached landmarks at
    :meth:`ModelScorer.covering_spec`. ``patch``/``stride`` in pixels of that crop (default:
    PATCH_FRACTION / STRIDE_FRACTION); ``space``: heat in log-odds (default) or probability.
    """
    t0 = time.perf_counter()
    if top_k < 1:
        raise ConfigError("top_k must be at least 1")
    cache_path = Path(cache_path)
    model = model_path if isinstance(model_path, Model) else load_model(model_path)
    warnings = [f"extraction differs: {w}" for w in model.check_cache(cache_path)]
    scorer = scorer or ModelScorer(model, device=device, weights=weights)
    with CacheReader(cache_path) as cache:
        videos = cache.videos()
        i = _find_item(videos, video_id, cache_path)
        _check_explainable(videos, i)
        rows = slice(int(videos["row_start"][i]),
                     int(videos["row_start"][i] + videos["row_count"][i]))
        frames = {k: v[rows] for k, v in cache.frames(
            ("frame_index", "timestamp", "track", "has_face", "landmarks", "augment")).items()}
        X = np.concatenate([cache.features(name, rows) for name in model.features], axis=1)
        stored = stored_spec(cache)
        # augmented rows (extract --augment) only train: never scored nor explained
        usable = frames["has_face"] & np.isfinite(X).all(axis=1) & (frames["augment"] == "")
        local = np.flatnonzero(usable)
        if not len(local):
            raise FakeprobeError(f"{video_id}: no face row with the features "
                                 f"{'+'.join(model.features)}, nothing to explain")
        local = local[np.lexsort((frames["track"][local], frames["frame_index"][local]))]
        # the video score as evaluate gives it (a temporal head sees each track whole); the
        # timeline and top frames by per-frame score (a temporal head's prefix scores)
        rows_at = (np.zeros(len(local), int), frames["track"][local],
                   frames["frame_index"][local])
        row_scores = fake_proba(model.pipeline, X[local],
                                **predict_params(model.pipeline, *rows_at))
        per_frame = frame_scores(model.pipeline, X[local], *rows_at)
        scores = row_scores if per_frame is None else per_frame
        order = np.argsort(-scores, kind="stable")[:top_k]
        chosen = local[order]
        from_cache = stored is not None and scorer.covers(stored)
        spec = stored if from_cache else scorer.covering_spec()
        try:
            crops = row_crops(cache, rows.start + chosen, spec, strict=True)[spec]
        except CropError as exc:
            raise FakeprobeError(f"{exc}; a cache extracted with --keep-crops large enough for "
                                 "every backbone needs no media") from None
    aggregation = model.aggregation
    track = frames["track"][local]
    smoothed = np.empty_like(scores)
    for t in np.unique(track):
        members = track == t
        smoothed[members] = smooth(scores[members], aggregation.smoothing,
                                   aggregation.window, aggregation.alpha)
    score = float(aggregation.video_scores(row_scores, np.zeros(len(local), int),
                                           frames["frame_index"][local], track, 1)[0])
    patch, stride = default_patch(spec.size, patch, stride)
    score_fn = scorer.for_spec(spec)
    top = []
    for rank, (k, row, crop) in enumerate(zip(order, chosen, crops), start=1):
        heat, baseline = occlusion_maps(crop, score_fn, patch=patch, stride=stride, fill=fill,
                                        space=space)
        top.append(FrameExplanation(
            rank=rank, row=int(rows.start + row), frame_index=int(frames["frame_index"][row]),
            time=float(frames["timestamp"][row]), track=int(frames["track"][row]),
            score=float(scores[k]), crop_score=baseline, crop=crop, heatmap=heat,
            overlay=crop, regions=hottest_regions(heat, spec)))
    result = VideoExplanation(
        id=video_id, path=str(videos["path"][i]), kind=str(videos["kind"][i]),
        true_label=str(videos["label"][i]), score=score,
        label="fake" if score >= model.threshold else "real", threshold=model.threshold,
        aggregation=dict(model.provenance["aggregation"]), features=model.features,
        timeline={"frame": frames["frame_index"][local], "time": frames["timestamp"][local],
                  "track": track, "score": scores, "smoothed": smoothed},
        top_frames=top, crop_spec=spec, crop_source="cache" if from_cache else "media",
        patch=patch, stride=stride, fill=fill, space=space, seconds=0.0,
        warnings=warnings + check_versions(model))
    scale = result.heat_scale  # one colour scale for every overlay of the item
    for frame in top:
        frame.overlay = overlay(frame.crop, frame.heatmap, scale,
                                blur=OVERLAY_BLUR_FRACTION * stride)
    result.seconds = time.perf_counter() - t0
    return result


def safe_name(item_id: str, taken: set[str] | None = None) -> str:
    """A file name (no extension) for an item id: path separators and odd characters become
    ``_``; long ids keep their end; a name already in ``taken`` gets a hash of the id."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._") or "item"
    name = name[-100:]
    if taken is not None and name in taken:
        name = f"{name}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"
    if taken is not None:
        taken.add(name)
    return name


# --- explaining many items (the `explain` command) -------------------------------------------

def top_scoring(model: Model, cache_path: Path | str, n: int) -> list[tuple[str, float]]:
    """The ``n`` items of a cache with the highest video score, as (id, score)."""
    from fakeprobe.classifiers.data import Selection, load_frames

    data = load_frames(cache_path, model.features, Selection(labelled_only=False))
    if not len(data.X):
        return []
    scores = fake_proba(model.pipeline, data.X)
    videos = model.aggregation.video_scores(scores, data.video, data.frame_index, data.track,
                                            data.n_videos)
    ok = np.flatnonzero(~np.isnan(videos))
    ok = ok[np.lexsort((data.videos["id"][ok], -videos[ok]))][:n]
    return [(str(data.videos["id"][i]), float(videos[i])) for i in ok]


@dataclass
class ExplainResult:
    model: str
    cache: str
    out_dir: Path
    items: list[VideoExplanation]
    pngs: list[Path]
    json_path: Path
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "cache": self.cache, "seconds": self.seconds,
                "items": [{**e.to_dict(), "png": str(p)} for e, p in zip(self.items, self.pngs)],
                "failures": self.failures}


def explain_items(model_path: Path | str, cache_path: Path | str, out_dir: Path | str, *,
                  ids: Sequence[str] = (), top_fakes: int | None = None,
                  top_k: int = DEFAULT_TOP_K, patch: int | None = None,
                  stride: int | None = None, fill: str = "blur", space: str = DEFAULT_SPACE,
                  device: str = "auto", weights: dict[str, str] | None = None,
                  progress: Callable[[str], None] | None = None) -> ExplainResult:
    """Explain the items ``ids`` and the ``top_fakes`` items with the highest video score;
    write ``out_dir/<safe name>.png`` per item and ``out_dir/explanations.json``.

    Every id is checked before any work starts (an unknown or faceless id is an error). An item
    that fails later (its media gone when the crops must be re-read) is recorded in
    ``failures`` and the others go on; when none can be explained, that is an error."""
    t0 = time.perf_counter()
    if fill not in FILLS:
        raise FakeprobeError(f"unknown fill {fill!r}; choose one of: {', '.join(FILLS)}")
    if space not in SPACES:
        raise FakeprobeError(f"unknown space {space!r}; choose one of: {', '.join(SPACES)}")
    cache_path, out_dir = Path(cache_path), Path(out_dir)
    model = load_model(model_path)
    model.check_cache(cache_path)
    with CacheReader(cache_path) as cache:
        videos = cache.videos()
    wanted = list(dict.fromkeys(ids))
    for video_id in wanted:
        _check_explainable(videos, _find_item(videos, video_id, cache_path))
    if top_fakes:
        wanted += [v for v, _ in top_scoring(model, cache_path, top_fakes) if v not in wanted]
    if not wanted:
        raise FakeprobeError("nothing to explain: name items with --id or ask for --top-fakes N")
    scorer = ModelScorer(model, device=device, weights=weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    items, pngs, failures = [], [], []
    for video_id in wanted:
        if progress:
            progress(video_id)
        try:
            expl = explain_video(model, cache_path, video_id, top_k=top_k, patch=patch,
                                 stride=stride, fill=fill, space=space, scorer=scorer)
        except FakeprobeError as exc:
            failures.append({"id": video_id, "error": str(exc)})
            continue
        items.append(expl)
        pngs.append(save_explanation(expl, out_dir / f"{safe_name(video_id, taken)}.png"))
    if not items:
        raise FakeprobeError("no item could be explained: " + "; ".join(
            f"{f['id']}: {f['error']}" for f in failures[:3]))
    json_path = out_dir / "explanations.json"
    result = ExplainResult(str(model_path), str(cache_path), out_dir, items, pngs, json_path,
                           0.0, failures)
    result.seconds = time.perf_counter() - t0
    json_path.write_text(json.dumps(finite(result.to_dict()), indent=2, allow_nan=False))
    return result


__all__ = [
    "DEFAULT_SPACE",
    "DEFAULT_TOP_K",
    "FILLS",
    "PATCH_FRACTION",
    "REGIONS",
    "SPACES",
    "STRIDE_FRACTION",
    "ExplainResult",
    "FrameExplanation",
    "ModelScorer",
    "ScoreFn",
    "VideoExplanation",
    "backbone_specs",
    "covering_spec",
    "default_patch",
    "explain_items",
    "explain_video",
    "face_regions",
    "hottest_regions",
    "log_odds",
    "occlusion_map",
    "occlusion_maps",
    "overlay",
    "render_explanation",
    "safe_name",
    "save_explanation",
    "top_scoring",
]
