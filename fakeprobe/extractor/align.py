"""Face alignment: a similarity transform from five landmarks onto a fixed template."""

from __future__ import annotations

import cv2
import numpy as np

from fakeprobe.extractor.base import CropSpec

#: The ArcFace five-point template for a 112x112 crop (insightface's reference points).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template_for(spec: CropSpec) -> np.ndarray:
    """The five target points for a crop of ``spec.size`` pixels with ``spec.margin``."""
    unit = ARCFACE_TEMPLATE_112 / 112.0
    return ((unit - 0.5) / (1.0 + 2.0 * spec.margin) + 0.5) * spec.size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama's closed form; returns a 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(frame_bgr: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The aligned ``spec.size`` square crop of one face, as RGB uint8.

    Pixels outside the frame are filled by reflecting the border, so a face at the edge of the
    frame gives no black band that a classifier could learn.
    """
    matrix = similarity_transform(landmarks, template_for(spec))
    crop = cv2.warpAffine(
        frame_bgr,
        matrix,
        (spec.size, spec.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def can_recrop(stored: CropSpec, wanted: CropSpec) -> bool:
    """True when ``wanted`` crops can be cut from ``stored`` ones with no loss: the wanted field
    of view lies inside the stored one (no margin to invent) and needs no upsampling."""
    inside = wanted.margin <= stored.margin
    scale = wanted.size * (1 + 2 * stored.margin) / (stored.size * (1 + 2 * wanted.margin))
    return inside and scale <= 1.0 + 1e-9


def recrop(crops: np.ndarray, stored: CropSpec, wanted: CropSpec) -> np.ndarray:
    """Crops of geometry ``wanted`` cut from aligned crops of geometry ``stored`` (RGB uint8,
    ``(n, S, S, 3)``). Both are aligned on the same template, so the map is a scale and a
    shift; check :func:`can_recrop` first."""
    matrix = similarity_transform(template_for(stored), template_for(wanted))
    out = np.empty((len(crops), wanted.size, wanted.size, 3), np.uint8)
    for k, crop in enumerate(crops):
        out[k] = cv2.warpAffine(crop, matrix, (wanted.size, wanted.size),
                                flags=cv2.INTER_AREA if wanted.size < stored.size
                                else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out
