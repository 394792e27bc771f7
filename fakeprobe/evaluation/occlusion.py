"""Occlusion sensitivity (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014): which regions of one aligned face crop drove its score.

A patch slides over the crop and hides what is under it; each occluded copy is scored through
``score_fn`` (for an explanation, the *whole* model: see :mod:`fakeprobe.evaluation.scoring`). A
region whose hiding lowers P(fake) is one that made the face look fake: the heatmap is the
baseline score minus the occluded score, averaged where patches overlap.

The heat is measured in P(fake) (``space="proba"``, the plain definition) or in log-odds of fake
(``space="logit"``, what explanations use by default): a face scored 0.9999 moves by 1e-5 in
probability when a decisive region is hidden, which no colour map shows, while its log-odds move
by whole units; for a logistic head the log-odds are also linear in the features.

By default a patch is replaced by a heavy blur of the same region: it removes the fine texture
that blending and up-sampling leave, keeps the colour and the light, and adds no sharp edge (a
grey square adds an edge, which a texture detector may itself call fake; ``fill="grey"`` gives
the classic grey patch all the same).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fakeprobe.errors import ConfigError

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
#: Units the heat is measured in: the drop in P(fake), or in its log-odds (see module docstring).
SPACES = ("proba", "logit")
#: Space of :func:`~fakeprobe.evaluation.explain.explain_video`'s heatmaps.
DEFAULT_SPACE = "logit"
#: Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the log-odds: float64 still
#: resolves 1 - 1e-15, so scores up to about +-34 log-odds keep their differences.
LOGIT_EPS = 1e-15

ScoreFn = Callable[[np.ndarray], np.ndarray]


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
        raise ConfigError(f"patch must be 1..{size} pixels, got {patch}")
    if stride < 1:
        raise ConfigError(f"stride must be at least 1 pixel, got {stride}")
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
        raise ConfigError(f"expected one square (S, S, 3) RGB crop, got shape {crop.shape}")
    if crop.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 crop, got {crop.dtype}")
    if fill not in FILLS:
        raise ConfigError(f"unknown fill {fill!r}; choose one of: {', '.join(FILLS)}")
    if space not in SPACES:
        raise ConfigError(f"unknown space {space!r}; choose one of: {', '.join(SPACES)}")
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
        raise ConfigError(f"score_fn returned {len(scores)} scores for {len(batch)} crops")
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
