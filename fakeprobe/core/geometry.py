"""Face geometry every layer shares: the crop spec, the ArcFace template, the face outline and
the similarity transform that maps five landmarks onto the template.

The five landmarks are, in image coordinates: the eye on the image's left, the eye on the
image's right, the nose tip, the mouth corner on the image's left, the mouth corner on the
image's right (the order of the ArcFace template and of YuNet's output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropSpec:
    """Geometry of an aligned face crop.

    The five landmarks are mapped by a similarity transform onto the ArcFace 112x112 template,
    shrunk by ``1 + 2 * margin`` about the crop centre and scaled to ``size`` pixels. ``margin=0``
    is the tight crop face-recognition networks expect (brows to chin); ``margin=0.1`` grows it
    by 20% and keeps the jaw line, forehead and the blending boundary of a swapped face, which
    manipulation detectors need.
    """

    size: int
    margin: float = 0.0


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

#: Face outline in the 112x112 ArcFace template's coordinates (x, y), clockwise in the image
#: from the ear on the image's left: jaw line below the mouth (template mouth corners are at
#: y ~ 92), up the right cheek, across the forehead just above the brows (eyes at y ~ 51.6,
#: brows at y ~ 38). Symmetric about the template's centre line x = 56.
FACE_OUTLINE_112 = np.array(
    [
        [18.0, 50.0], [19.0, 64.0], [22.0, 78.0], [27.0, 91.0], [34.0, 102.0], [43.0, 111.0],
        [56.0, 116.0], [69.0, 111.0], [78.0, 102.0], [85.0, 91.0], [90.0, 78.0], [93.0, 64.0],
        [94.0, 50.0], [92.0, 38.0], [86.0, 29.0], [76.0, 24.0], [56.0, 22.0], [36.0, 24.0],
        [26.0, 29.0], [20.0, 38.0],
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
