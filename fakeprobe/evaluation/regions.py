"""Named face regions of an aligned crop, and the regions an occlusion heatmap is hottest in."""

from __future__ import annotations

from typing import Any

import numpy as np

from fakeprobe.core.geometry import CropSpec, template_for
from fakeprobe.errors import ConfigError

#: Regions reported for a heatmap: at most this many, and only those whose mean heat is at least
#: REGION_KEEP_SHARE of the hottest region's.
MAX_REGIONS = 3
REGION_KEEP_SHARE = 0.5

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
        raise ConfigError(f"heatmap of shape {heatmap.shape} for a {spec.size} px crop")
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
