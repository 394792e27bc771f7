"""Explanations: which frames, and which regions of their faces, drove a video's score.

Two questions, two answers:

* **which frames**: the model's per-frame fake scores in time order (the *timeline*, with the
  model's temporal smoothing as :func:`fakeprobe.classifiers.aggregate.smooth` applies it before
  aggregation), and the ``top_k`` frames that score highest;
* **which regions**: *occlusion sensitivity* (Zeiler & Fergus, "Visualizing and Understanding
  Convolutional Networks", ECCV 2014) on each top frame's aligned face crop: a patch slides over
  the crop and hides what is under it; each occluded copy is scored through the *whole* model
  (recrop to every backbone's geometry, embed, concatenate, head). A region whose hiding lowers
  P(fake) is one that made the face look fake: the heatmap is the baseline score minus the
  occluded score, averaged where patches overlap.

The heat is measured in P(fake) (``space="proba"``, the plain definition) or in log-odds of fake
(``space="logit"``, what :func:`explain_video` uses by default): a face scored 0.9999 moves by
1e-5 in probability when a decisive region is hidden, which no colour map shows, while its
log-odds move by whole units; for a logistic head the log-odds are also linear in the features.

By default a patch is replaced by a heavy blur of the same region: it removes the fine texture
that blending and up-sampling leave, keeps the colour and the light, and adds no sharp edge (a
grey square adds an edge, which a texture detector may itself call fake; ``fill="grey"`` gives
the classic grey patch all the same).

Crops are scored at one geometry per explanation, so that what is hidden in the shown crop is
hidden from every backbone (see :class:`ModelScorer`): the cache's stored crops when every
backbone's crop can be cut from them (:func:`fakeprobe.extractor.align.can_recrop`), otherwise
crops re-aligned from the re-read frames, with the cached landmarks, at the smallest geometry
that covers every backbone (:meth:`ModelScorer.covering_spec`).

Rendering (:func:`render_explanation`) imports matplotlib inside the function and draws on an
Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakeprobe.classifiers.aggregate import smooth
from fakeprobe.classifiers.model import Model, check_versions, load_model
from fakeprobe.classifiers.training import fake_proba
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec, template_for
from fakeprobe.errors import FakeprobeError
from fakeprobe.evaluation.runs import finite
from fakeprobe.extractor.align import can_recrop, recrop
from fakeprobe.extractor.base import Backbone
from fakeprobe.features.cache import CacheReader
from fakeprobe.features.crops import CropError, row_crops, stored_spec

#: Side of the occluding patch as a share of the crop side, when ``patch`` is not given: 0.2 is
#: 45 px on a 224 px crop, about an eye or half the mouth (Zeiler & Fergus slid a 50 px grey
#: square over 224 px images).
PATCH_FRACTION = 0.2
#: Step between patches as a share of the patch side, when ``stride`` is not given: half a patch,
#: so every pixel is covered by about four patches and the map is smoother than the patch grid.
STRIDE_FRACTION = 0.5
#: Gaussian sigma of the blur fill, as a share of the patch side: a third of the patch wipes out
#: every detail smaller than the patch (texture, blending seams) but keeps colour and shading.
BLUR_SIGMA_FRACTION = 1 / 3
#: Value of the ``grey`` fill (mid grey in 0..255).
GREY_FILL = 128
FILLS = ("blur", "grey")
#: Frames explained per video by default.
DEFAULT_TOP_K = 4
#: Units the heat is measured in: the drop in P(fake), or in its log-odds (see module docstring).
SPACES = ("proba", "logit")
#: Space of :func:`explain_video`'s heatmaps.
DEFAULT_SPACE = "logit"
#: Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the log-odds: float64 still
#: resolves 1 - 1e-15, so scores up to about +-34 log-odds keep their differences.
LOGIT_EPS = 1e-15
#: Overlays: a heat of this much (per space) or more shows at full colour, whatever the item, so
#: that the map of a near-constant scorer (drops of 1e-4) is not blown up into noise.
MIN_HEAT_SCALE = {"proba": 0.02, "logit": 0.1}
#: The colour bar's label per space.
HEAT_UNITS = {"proba": "drop in P(fake) when hidden",
              "logit": "drop in log-odds of fake when hidden"}
#: Opacity of the colour map where the heat is at its top; cooler pixels are more transparent and
#: regions with no positive heat keep the plain face.
OVERLAY_ALPHA = 0.6
#: Display smoothing of the overlays: Gaussian sigma as a share of the stride (the heatmap itself
#: is left as measured).
OVERLAY_BLUR_FRACTION = 0.5
#: Colour map of the overlays (OpenCV's JET: blue cool, red hot; matplotlib's "jet" for the bar).
OVERLAY_COLORMAP = cv2.COLORMAP_JET
#: Regions reported for a heatmap: at most this many, and only those whose mean heat is at least
#: REGION_KEEP_SHARE of the hottest region's.
MAX_REGIONS = 3
REGION_KEEP_SHARE = 0.5

ScoreFn = Callable[[np.ndarray], np.ndarray]


# --- occlusion sensitivity -------------------------------------------------------------------

def _positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one axis: every ``stride`` pixels, plus one flush with the far
    edge so that the whole crop is covered."""
    last = size - patch
    positions = list(range(0, last + 1, stride))
    if positions[-1] != last:
        positions.append(last)
    return positions


def default_patch(size: int, patch: int | None = None, stride: int | None = None
                  ) -> tuple[int, int]:
    """(patch, stride) in pixels for a crop of ``size`` pixels: those given, else PATCH_FRACTION
    of the crop and STRIDE_FRACTION of the patch."""
    patch = max(1, round(PATCH_FRACTION * size)) if patch is None else int(patch)
    stride = max(1, round(STRIDE_FRACTION * patch)) if stride is None else int(stride)
    if not 1 <= patch <= size:
        raise ValueError(f"patch must be 1..{size} pixels, got {patch}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1 pixel, got {stride}")
    return patch, stride


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [LOGIT_EPS, 1 - LOGIT_EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def occlusion_maps(crop_rgb: np.ndarray, score_fn: ScoreFn, *, patch: int | None = None,
                   stride: int | None = None, fill: str = "blur", space: str = "proba"
                   ) -> tuple[np.ndarray, float]:
    """:func:`occlusion_map` and the baseline score of the unoccluded crop (scored in the same
    batch, so that both come from the same call)."""
    crop = np.asarray(crop_rgb)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"expected one square (S, S, 3) RGB crop, got shape {crop.shape}")
    if crop.dtype != np.uint8:
        raise ValueError(f"expected a uint8 crop, got {crop.dtype}")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of: {', '.join(FILLS)}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of: {', '.join(SPACES)}")
    size = crop.shape[0]
    patch, stride = default_patch(size, patch, stride)
    if fill == "blur":
        sigma = max(1.0, BLUR_SIGMA_FRACTION * patch)
        filler = cv2.GaussianBlur(crop, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT_101)
    else:
        filler = np.full_like(crop, GREY_FILL)
    boxes = [(y, x) for y in _positions(size, patch, stride)
             for x in _positions(size, patch, stride)]
    batch = np.repeat(crop[None], len(boxes) + 1, axis=0)  # [0] stays the baseline
    for k, (y, x) in enumerate(boxes, start=1):
        batch[k, y:y + patch, x:x + patch] = filler[y:y + patch, x:x + patch]
    scores = np.asarray(score_fn(batch), dtype=np.float64).reshape(-1)
    if len(scores) != len(batch):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(batch)} crops")
    values = log_odds(scores) if space == "logit" else scores
    total = np.zeros((size, size), np.float64)
    count = np.zeros((size, size), np.float64)
    for (y, x), value in zip(boxes, values[1:]):
        total[y:y + patch, x:x + patch] += values[0] - value
        count[y:y + patch, x:x + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32), float(scores[0])


def occlusion_map(crop_rgb: np.ndarray, score_fn: ScoreFn, *, patch: int | None = None,
                  stride: int | None = None, fill: str = "blur", space: str = "proba"
                  ) -> np.ndarray:
    """Occlusion sensitivity of one aligned face crop (Zeiler & Fergus 2014).

    A ``patch`` x ``patch`` square slides over ``crop_rgb`` (``(S, S, 3)`` uint8 RGB) every
    ``stride`` pixels (plus one last step flush with the edge); under it the crop is replaced by
    a heavy Gaussian blur of itself (``fill="blur"``, sigma BLUR_SIGMA_FRACTION of the patch) or
    by mid grey (``fill="grey"``). The unoccluded crop and every occluded copy go through
    ``score_fn`` (``(n, S, S, 3)`` uint8 -> ``(n,)`` P(fake)) in ONE call. Returns an ``(S, S)``
    float32 map: per pixel, the mean over the patches covering it of ``baseline - occluded``
    score. Positive: hiding this region lowers P(fake), the region made the face look fake;
    negative: it made it look real; zero everywhere for a scorer that ignores the image.
    ``space="logit"`` measures the drop in log-odds of fake instead of in probability.

    Defaults: ``patch`` = PATCH_FRACTION of the crop side, ``stride`` = STRIDE_FRACTION of the
    patch.
    """
    return occlusion_maps(crop_rgb, score_fn, patch=patch, stride=stride, fill=fill,
                          space=space)[0]


# --- scoring crops through the extractor and the head ----------------------------------------

def backbone_specs(model: Model) -> dict[str, CropSpec]:
    """Each feature set's crop geometry, from the model's ``feature_configs``."""
    specs = {}
    for name in model.features:
        cfg = model.provenance.get("feature_configs", {}).get(name, {})
        if "crop_size" not in cfg:
            raise FakeprobeError(f"feature set {name!r} of this model records no crop geometry: "
                                 "it was not made by a backbone that can be run again, so its "
                                 "frames cannot be explained")
        specs[name] = CropSpec(int(cfg["crop_size"]), float(cfg.get("crop_margin", 0.0)))
    return specs


def covering_spec(specs: Iterable[CropSpec], margin: float = CONTEXT_MARGIN) -> CropSpec:
    """The smallest crop geometry from which every one of ``specs`` can be cut without loss:
    the widest margin (at least ``margin``, so that the jaw line and the blending boundary show
    in the explanation), at the size that needs no upsampling for any of them."""
    specs = list(specs)
    margin = max([margin, *(s.margin for s in specs)])
    size = max(math.ceil(s.size * (1 + 2 * margin) / (1 + 2 * s.margin) - 1e-6) for s in specs)
    return CropSpec(int(size), float(margin))


class ModelScorer:
    """P(fake) of aligned face crops through a model's backbones and head.

    ``score(crops, spec)`` takes crops of geometry ``spec`` (RGB uint8), recrops them to each
    feature set's backbone crop (read from the model's ``feature_configs``), embeds them with
    that backbone, concatenates the features in ``model.features`` order and applies the head.
    Backbones are created on first use and kept (one scorer serves many videos); each one's
    config is checked against the one the model was trained with (weights checksum, crop, dim),
    so an explanation never runs other weights than the model's.
    """

    def __init__(self, model: Model, *, device: str = "auto",
                 weights: dict[str, str] | None = None, batch_size: int = 32) -> None:
        self.model = model
        self.device = device
        self.weights = dict(weights or {})
        self.batch_size = batch_size
        self.specs = backbone_specs(model)
        self._backbones: dict[str, Backbone] = {}

    def backbone(self, name: str) -> Backbone:
        if name not in self._backbones:
            from fakeprobe.extractor.backbones.load import load_backbone

            self._backbones[name] = load_backbone(
                name, weights=self.weights.get(name), device=self.device,
                batch_size=self.batch_size,
                expected=self.model.provenance["feature_configs"][name])
        return self._backbones[name]

    def covers(self, spec: CropSpec) -> bool:
        """True when every backbone's crop can be cut from crops of geometry ``spec``."""
        return all(can_recrop(spec, wanted) for wanted in self.specs.values())

    def covering_spec(self) -> CropSpec:
        """The geometry crops are re-aligned at when the cache's crops do not serve: the
        smallest that covers every backbone, with at least CONTEXT_MARGIN (see
        :func:`covering_spec`)."""
        return covering_spec(self.specs.values())

    def features(self, crops: np.ndarray, spec: CropSpec) -> np.ndarray:
        crops = np.asarray(crops, dtype=np.uint8)
        if not self.covers(spec):
            raise ValueError(f"crops of {spec} cannot feed every backbone of the model "
                             f"({self.specs})")
        parts = []
        for name in self.model.features:
            wanted = self.specs[name]
            cut = crops if wanted == spec else recrop(crops, spec, wanted)
            parts.append(np.asarray(self.backbone(name).embed(cut), dtype=np.float32))
        return np.concatenate(parts, axis=1)

    def score(self, crops: np.ndarray, spec: CropSpec) -> np.ndarray:
        return fake_proba(self.model.pipeline, self.features(crops, spec))

    def for_spec(self, spec: CropSpec) -> ScoreFn:
        """``score`` bound to one geometry: the ``score_fn`` of :func:`occlusion_map`."""
        return lambda crops: self.score(crops, spec)


# --- face regions ----------------------------------------------------------------------------

#: Region names, in the order of the label map of :func:`face_regions`. Left and right are as
#: seen in the image (the subject's right eye is the image's "left eye").
REGIONS = ("background", "forehead", "left eye", "right eye", "nose", "left cheek",
           "right cheek", "mouth", "chin", "jaw line/boundary")


def face_regions(spec: CropSpec) -> np.ndarray:
    """``(S, S)`` int map of :data:`REGIONS` indices for an aligned crop of geometry ``spec``.

    Built from the ArcFace template's five points where :func:`template_for` puts them: with
    ``d`` the eye distance and ``h`` the eye-to-mouth height, the face is an upright ellipse
    centred between the eyes, 0.27 h below them, with half-axes 1.15 d and 1.3 h (brow to chin,
    ear to ear on the template); a ring from 0.85 to 1.1 of it is the jaw line and the blending
    boundary of a swapped face. Eyes are discs of 0.35 d, the nose a disc of 0.3 d about its
    tip, the mouth an ellipse about its corners; the rest of the face is forehead (above the
    eyes), chin (below the mouth) or a cheek; outside the ring is background (hair, neck).
    """
    points = template_for(spec)
    left_eye, right_eye, nose, mouth_l, mouth_r = points
    d = float(np.linalg.norm(right_eye - left_eye))
    eye_y = (left_eye[1] + right_eye[1]) / 2
    mouth = (mouth_l + mouth_r) / 2
    h = float(mouth[1] - eye_y)
    cx = (left_eye[0] + right_eye[0]) / 2
    cy = eye_y + 0.27 * h
    ys, xs = np.mgrid[0:spec.size, 0:spec.size].astype(np.float64) + 0.5
    r = np.sqrt(((xs - cx) / (1.15 * d)) ** 2 + ((ys - cy) / (1.3 * h)) ** 2)
    labels = np.zeros((spec.size, spec.size), np.int16)
    index = {name: k for k, name in enumerate(REGIONS)}
    inside = r < 1.1
    labels[inside & (ys < eye_y - 0.35 * d)] = index["forehead"]
    labels[inside & (ys > mouth[1] + 0.3 * d)] = index["chin"]
    cheeks = inside & (ys >= eye_y - 0.35 * d) & (ys <= mouth[1] + 0.3 * d)
    labels[cheeks & (xs < cx)] = index["left cheek"]
    labels[cheeks & (xs >= cx)] = index["right cheek"]
    labels[inside & (r >= 0.85)] = index["jaw line/boundary"]
    half_w = 0.5 * float(np.linalg.norm(mouth_r - mouth_l)) + 0.2 * d
    labels[((xs - mouth[0]) / half_w) ** 2 + ((ys - mouth[1]) / (0.3 * d)) ** 2 < 1] = \
        index["mouth"]
    labels[(xs - nose[0]) ** 2 + (ys - nose[1]) ** 2 < (0.3 * d) ** 2] = index["nose"]
    for name, eye in (("left eye", left_eye), ("right eye", right_eye)):
        labels[(xs - eye[0]) ** 2 + (ys - eye[1]) ** 2 < (0.35 * d) ** 2] = index[name]
    return labels


def hottest_regions(heatmap: np.ndarray, spec: CropSpec) -> list[dict[str, Any]]:
    """The face regions with the most positive heat, hottest first: ``[{"region", "heat"}]``
    where ``heat`` is the region's mean drop in P(fake) when hidden. At most MAX_REGIONS, and
    only regions within REGION_KEEP_SHARE of the hottest; empty when nothing raised the score."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.shape != (spec.size, spec.size):
        raise ValueError(f"heatmap of shape {heatmap.shape} for a {spec.size} px crop")
    labels = face_regions(spec)
    means = []
    for k, name in enumerate(REGIONS):
        mask = labels == k
        if mask.any():
            means.append((float(heatmap[mask].mean()), name))
    means = sorted((m for m in means if m[0] > 0), reverse=True)
    if not means:
        return []
    best = means[0][0]
    return [{"region": name, "heat": round(value, 6)} for value, name in means[:MAX_REGIONS]
            if value >= REGION_KEEP_SHARE * best]


# --- overlays --------------------------------------------------------------------------------

def overlay(crop_rgb: np.ndarray, heatmap: np.ndarray, scale: float | None = None, *,
            blur: float = 0.0) -> np.ndarray:
    """The crop with the positive part of ``heatmap`` blended on top in a colour map (RGB uint8).

    Heat is divided by ``scale`` (default: the map's maximum) and clipped to 0..1; opacity grows
    with it up to OVERLAY_ALPHA, so cool regions show the plain face. ``blur`` > 0 smooths the
    heat (Gaussian sigma in pixels) for display only: averaged patches leave a blocky grid.
    """
    crop = np.asarray(crop_rgb, dtype=np.uint8)
    heat = np.asarray(heatmap, dtype=np.float64)
    if blur > 0:
        heat = cv2.GaussianBlur(heat, (0, 0), sigmaX=blur, sigmaY=blur,
                                borderType=cv2.BORDER_REPLICATE)
    scale = float(scale if scale is not None else heat.max(initial=0.0))
    if scale <= 0:
        return crop.copy()
    level = np.clip(heat / scale, 0.0, 1.0)
    colours = cv2.cvtColor(cv2.applyColorMap((level * 255).astype(np.uint8), OVERLAY_COLORMAP),
                           cv2.COLOR_BGR2RGB).astype(np.float64)
    alpha = (OVERLAY_ALPHA * level)[..., None]
    return np.clip(crop * (1 - alpha) + colours * alpha + 0.5, 0, 255).astype(np.uint8)


# --- explaining one item ---------------------------------------------------------------------

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
        raise ValueError("top_k must be at least 1")
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
            ("frame_index", "timestamp", "track", "has_face", "landmarks")).items()}
        X = np.concatenate([cache.features(name, rows) for name in model.features], axis=1)
        stored = stored_spec(cache)
        usable = frames["has_face"] & np.isfinite(X).all(axis=1)
        local = np.flatnonzero(usable)
        if not len(local):
            raise FakeprobeError(f"{video_id}: no face row with the features "
                                 f"{'+'.join(model.features)}, nothing to explain")
        local = local[np.lexsort((frames["track"][local], frames["frame_index"][local]))]
        scores = fake_proba(model.pipeline, X[local])
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
    score = float(aggregation.video_scores(scores, np.zeros(len(local), int),
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


# --- rendering -------------------------------------------------------------------------------

def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def render_explanation(expl: VideoExplanation, *, dpi: int = 100) -> bytes:
    """One PNG figure of an explanation; returns its bytes (for a file, or base64 in HTML).

    On top the score timeline: frame scores over time (and the smoothed series when the model
    smooths), the model's threshold, the top frames circled and numbered. Under it, per top
    frame, its face crop and, below that, the crop with the occlusion heatmap blended in (one
    colour scale for the whole figure, bar on the right), titled with the hottest regions. An
    item with one scored frame (an image) has no timeline: its crop and overlay stand side by
    side.
    """
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = expl.top_frames
    single = len(expl.timeline["score"]) <= 1
    k = max(1, len(frames))
    if single:
        fig = Figure(figsize=(7.0, 4.4), dpi=dpi, layout="constrained")
        grid = fig.add_gridspec(1, 2)
        cells = [(grid[0, 0], grid[0, 1])] if frames else []
    else:
        fig = Figure(figsize=(max(2.5 * k + 0.8, 8.0), 8.4), dpi=dpi, layout="constrained")
        grid = fig.add_gridspec(3, k, height_ratios=[1.25, 1, 1])
        cells = [(grid[1, c], grid[2, c]) for c in range(len(frames))]
    FigureCanvasAgg(fig)
    truth = f", labelled {expl.true_label}" if expl.true_label else ""
    fig.suptitle(f"{_shorten(expl.id, 90)}\n{expl.label}: score {expl.score:.3f} (threshold "
                 f"{expl.threshold:.3f}){truth}; {'+'.join(expl.features)}, "
                 f"{expl.aggregation.get('method', '')} of frames", fontsize=10)
    times = np.asarray(expl.timeline["time"], dtype=float)
    use_time = bool(len(times)) and bool(np.isfinite(times).all())
    if not single:
        ax = fig.add_subplot(grid[0, :])
        xs = times if use_time else np.asarray(expl.timeline["frame"], dtype=float)
        smoothing = expl.aggregation.get("smoothing", "none")
        tracks = np.unique(expl.timeline["track"])
        for t in tracks:
            members = expl.timeline["track"] == t
            name = f"track {t}" if len(tracks) > 1 else "frame score"
            line = ax.plot(xs[members], expl.timeline["score"][members], marker="o",
                           markersize=3, linewidth=1.0, alpha=0.55 if smoothing != "none"
                           else 1.0, label=name)[0]
            if smoothing != "none":
                ax.plot(xs[members], expl.timeline["smoothed"][members], linewidth=2,
                        color=line.get_color(), label=f"{name}, smoothed ({smoothing})")
        ax.axhline(expl.threshold, color="crimson", linestyle="--", linewidth=1,
                   label=f"threshold {expl.threshold:.2f}")
        for frame in frames:
            x = frame.time if use_time else frame.frame_index
            ax.plot([x], [frame.score], marker="o", markersize=11, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.5)
            ax.annotate(str(frame.rank), (x, frame.score), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=9, weight="bold")
        ax.set_ylim(-0.03, 1.13)
        ax.set_xlabel("time (s)" if use_time else "frame")
        ax.set_ylabel("P(fake)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7, ncol=4, framealpha=0.8)
    images = []
    for frame, (crop_cell, overlay_cell) in zip(frames, cells):
        where = (f"t={frame.time:.2f} s" if math.isfinite(frame.time) else "image"
                 if expl.kind == "image" else f"frame {frame.frame_index}")
        crop_ax = fig.add_subplot(crop_cell)
        crop_ax.imshow(frame.crop)
        crop_ax.set_title(f"#{frame.rank}  {where}\nP(fake) {frame.score:.3f}", fontsize=8)
        overlay_ax = fig.add_subplot(overlay_cell)
        overlay_ax.imshow(frame.overlay)
        regions = ", ".join(r["region"] for r in frame.regions) or "no region raised the score"
        overlay_ax.set_title(textwrap.fill(regions, 32), fontsize=8)
        for a in (crop_ax, overlay_ax):
            a.set_xticks([])
            a.set_yticks([])
        images += [crop_ax, overlay_ax]
    if images:  # one bar beside every crop, so that the columns keep one width
        mappable = matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(0, expl.heat_scale),
            cmap=matplotlib.colormaps["jet"])
        bar = fig.colorbar(mappable, ax=images, location="right", shrink=0.9 if single
                           else 0.45, pad=0.01,
                           anchor=(0.0, 0.05))
        bar.set_label(HEAT_UNITS[expl.space], fontsize=7)
        bar.ax.tick_params(labelsize=6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_explanation(expl: VideoExplanation, path: Path | str, *, dpi: int = 100) -> Path:
    """Write :func:`render_explanation`'s PNG to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_explanation(expl, dpi=dpi))
    return path


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
    "DEFAULT_TOP_K",
    "REGIONS",
    "ExplainResult",
    "FrameExplanation",
    "ModelScorer",
    "VideoExplanation",
    "covering_spec",
    "explain_items",
    "explain_video",
    "face_regions",
    "hottest_regions",
    "occlusion_map",
    "occlusion_maps",
    "overlay",
    "render_explanation",
    "safe_name",
    "save_explanation",
    "top_scoring",
]
