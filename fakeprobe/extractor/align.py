"""Face alignment: a similarity transform from five landmarks onto a fixed template."""

from __future__ import annotations

import cv2
import numpy as np

from fakeprobe.core.geometry import CropSpec, similarity_transform, template_for


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
