"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022, "self-blended images").

A real face is blended with a slightly transformed copy of itself (colour jitter, a touch of
sharpening or blur, a small scale and shift) through a soft mask. The result carries the
blending boundary and colour mismatch a face swap leaves, with no second identity.

Only the five landmarks of :mod:`fakeprobe.core.geometry` are used (a 68-point model's licence
forbids commercial use), so the face region comes from a fixed outline,
:data:`~fakeprobe.core.geometry.FACE_OUTLINE_112`,
drawn in the coordinates of the 112x112 ArcFace template and mapped into the frame by the
similarity transform that is the inverse of the one :func:`~fakeprobe.extractor.align.align_face`
uses.

The steps are pure and seeded: :func:`draw_params` turns a :class:`BlendConfig` and a
``numpy.random.Generator`` into one :class:`BlendParams` (every number of one draw), and
:func:`face_mask`, :func:`transform_source` and :func:`self_blend` are deterministic given those
params. Reusing one ``BlendParams`` for every frame of a face track keeps a video's pseudo-fake
temporally consistent.

Sizes that scale with the face (erosion, mask blur, filter sigma, shift) are fractions of the
*face size*: the side, in frame pixels, of the 112x112 template square mapped into the frame
(about 3.2 inter-ocular distances).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from fakeprobe.core.geometry import ARCFACE_TEMPLATE_112, FACE_OUTLINE_112, similarity_transform
from fakeprobe.errors import ConfigError

__all__ = [
    "MASK_KINDS",
    "BlendConfig",
    "BlendParams",
    "draw_params",
    "face_mask",
    "face_outline",
    "face_size",
    "identity_params",
    "self_blend",
    "transform_source",
]

#: The ellipse mask: centre and semi-axes (template coordinates) of the ellipse inscribed in the
#: outline's bounding box, drawn as a 64-gon so both kinds share one rasteriser.
_ELLIPSE_CENTRE_112 = np.array([56.0, 69.0])
_ELLIPSE_AXES_112 = np.array([38.0, 47.0])
_ELLIPSE_SIDES = 64

MASK_KINDS = ("hull", "ellipse")
_FILTERS = ("none", "sharpen", "blur")
_SUBPIXEL_BITS = 4  # fillPoly's ``shift``: polygon vertices at 1/16 pixel


def _range(value: object, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)  # type: ignore[union-attr]
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ConfigError(f"BlendConfig.{name} must be a finite (low, high) with low <= high, "
                          f"got {value!r}")
    return low, high


@dataclass(frozen=True)
class BlendConfig:
    """The distribution of self-blend parameters; :func:`draw_params` samples one draw from it.

    Ranges are ``(low, high)`` sampled uniformly. Face-relative sizes are fractions of the face
    size (see the module docstring).
    """

    #: Mask shape: ``"hull"`` (convex hull of the face outline) or ``"ellipse"``.
    mask: str = "hull"
    #: Erosion of the mask before blurring, as a fraction of the face size (radius).
    erode: tuple[float, float] = (0.0, 0.05)
    #: Gaussian sigma of the mask blur, as a fraction of the face size.
    blur: tuple[float, float] = (0.01, 0.04)
    #: Choices for the blend ratio (weight of the transformed copy at the mask's core); repeats
    #: weight a value (SBI blends fully half of the time).
    blend_ratio: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    #: Isotropic scale of the copy about the face centre.
    scale: tuple[float, float] = (0.95, 1.05)
    #: Largest shift of the copy along each axis, as a fraction of the face size.
    shift: float = 0.03
    #: Largest hue rotation, in degrees (of 360).
    hue: float = 5.0
    #: Saturation factor.
    saturation: tuple[float, float] = (0.9, 1.1)
    #: Brightness offset, as a fraction of the full range (255).
    brightness: tuple[float, float] = (-0.05, 0.05)
    #: Contrast factor about mid-grey.
    contrast: tuple[float, float] = (0.9, 1.1)
    #: Probability of filtering the copy; sharpen and blur are then equally likely.
    sharpen_or_blur: float = 0.5
    #: Unsharp-mask amount when sharpening (``x + amount * (x - gauss(x))``).
    sharpen_amount: tuple[float, float] = (0.3, 1.0)
    #: Gaussian sigma of the filter (both sharpen and blur), as a fraction of the face size.
    filter_sigma: tuple[float, float] = (0.002, 0.006)

    def __post_init__(self) -> None:
        if self.mask not in MASK_KINDS:
            raise ConfigError(f"BlendConfig.mask must be one of {MASK_KINDS}, got {self.mask!r}")
        for name in ("erode", "blur", "scale", "saturation", "brightness", "contrast",
                     "sharpen_amount", "filter_sigma"):
            object.__setattr__(self, name, _range(getattr(self, name), name))
        ratios = tuple(float(r) for r in self.blend_ratio)
        if not ratios or not all(0.0 <= r <= 1.0 for r in ratios):
            raise ConfigError(f"BlendConfig.blend_ratio must be non-empty values in [0, 1], "
                              f"got {self.blend_ratio!r}")
        object.__setattr__(self, "blend_ratio", ratios)
        if self.erode[0] < 0 or self.blur[0] < 0 or self.filter_sigma[0] < 0:
            raise ConfigError("BlendConfig.erode, blur and filter_sigma must be >= 0")
        if self.scale[0] <= 0:
            raise ConfigError(f"BlendConfig.scale must be > 0, got {self.scale!r}")
        if not 0.0 <= self.sharpen_or_blur <= 1.0:
            raise ConfigError(f"BlendConfig.sharpen_or_blur is a probability, got "
                              f"{self.sharpen_or_blur!r}")
        if self.shift < 0 or self.hue < 0:
            raise ConfigError("BlendConfig.shift and hue are maxima and must be >= 0")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> BlendConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class BlendParams:
    """One concrete draw: every number a self-blend needs. Reuse it across a face track."""

    mask: str  # "hull" | "ellipse"
    erode: float  # fraction of face size
    blur: float  # mask blur sigma, fraction of face size
    ratio: float  # blend weight at the mask's core
    scale: float  # copy's scale about the face centre
    shift_x: float  # copy's shift, fraction of face size
    shift_y: float
    hue: float  # degrees
    saturation: float  # factor
    brightness: float  # offset, fraction of 255
    contrast: float  # factor about mid-grey
    filter: str  # "none" | "sharpen" | "blur"
    sharpen_amount: float  # used when filter == "sharpen"
    filter_sigma: float  # fraction of face size, used when filter != "none"

    def __post_init__(self) -> None:
        if self.mask not in MASK_KINDS:
            raise ConfigError(f"BlendParams.mask must be one of {MASK_KINDS}, got {self.mask!r}")
        if self.filter not in _FILTERS:
            raise ConfigError(f"BlendParams.filter must be one of {_FILTERS}, got {self.filter!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BlendParams:
        return cls(**data)


def identity_params(**overrides: object) -> BlendParams:
    """Params whose transformed copy is the frame itself, so :func:`self_blend` is a no-op.

    No colour jitter, no filter, no warp; the mask is a hard hull blended at ratio 1. Any field
    can be overridden (e.g. ``identity_params(scale=1.05)`` to test one transform alone).
    """
    params = BlendParams(mask="hull", erode=0.0, blur=0.0, ratio=1.0, scale=1.0, shift_x=0.0,
                         shift_y=0.0, hue=0.0, saturation=1.0, brightness=0.0, contrast=1.0,
                         filter="none", sharpen_amount=0.0, filter_sigma=0.0)
    return dataclasses.replace(params, **overrides)


def draw_params(config: BlendConfig, rng: np.random.Generator) -> BlendParams:
    """One draw from ``config``. Always consumes the same number of values from ``rng``, so
    draws stay aligned whatever branch (filter or not) each one takes."""
    def u(r: tuple[float, float]) -> float:
        return float(rng.uniform(r[0], r[1]))

    erode, blur = u(config.erode), u(config.blur)
    ratio = float(config.blend_ratio[int(rng.integers(len(config.blend_ratio)))])
    scale = u(config.scale)
    shift_x, shift_y = (float(v) for v in rng.uniform(-config.shift, config.shift, size=2))
    hue = float(rng.uniform(-config.hue, config.hue))
    saturation, brightness, contrast = (u(config.saturation), u(config.brightness),
                                        u(config.contrast))
    apply_filter, pick_sharpen = rng.random(2)
    amount, sigma = u(config.sharpen_amount), u(config.filter_sigma)
    kind = "none" if apply_filter >= config.sharpen_or_blur else (
        "sharpen" if pick_sharpen < 0.5 else "blur")
    return BlendParams(mask=config.mask, erode=erode, blur=blur, ratio=ratio, scale=scale,
                       shift_x=shift_x, shift_y=shift_y, hue=hue, saturation=saturation,
                       brightness=brightness, contrast=contrast, filter=kind,
                       sharpen_amount=amount if kind == "sharpen" else 0.0,
                       filter_sigma=sigma if kind != "none" else 0.0)


# --- geometry --------------------------------------------------------------------------------

def _template_to_frame(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity from template coordinates into the frame (inverse of align's map)."""
    marks = np.asarray(landmarks, dtype=np.float64)
    if marks.shape != (5, 2) or not np.isfinite(marks).all():
        raise ConfigError(f"landmarks must be a finite (5, 2) array, got shape {marks.shape}")
    if ((marks - marks.mean(axis=0)) ** 2).sum() < 1e-6:
        raise ConfigError("degenerate landmarks: all five points coincide")
    forward = similarity_transform(marks, ARCFACE_TEMPLATE_112)
    return cv2.invertAffineTransform(forward)


def face_size(landmarks: np.ndarray) -> float:
    """Side, in frame pixels, of the 112x112 template square mapped onto this face."""
    matrix = _template_to_frame(landmarks)
    return float(math.sqrt(abs(np.linalg.det(matrix[:, :2]))) * 112.0)


def face_outline(landmarks: np.ndarray, kind: str = "hull") -> np.ndarray:
    """The mask's polygon in frame coordinates, ``(N, 2)`` float64 (may lie partly outside)."""
    if kind == "hull":
        points = FACE_OUTLINE_112
    elif kind == "ellipse":
        angles = np.linspace(0.0, 2.0 * np.pi, _ELLIPSE_SIDES, endpoint=False)
        points = _ELLIPSE_CENTRE_112 + _ELLIPSE_AXES_112 * np.stack(
            [np.cos(angles), np.sin(angles)], axis=1)
    else:
        raise ConfigError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    matrix = _template_to_frame(landmarks)
    return points @ matrix[:, :2].T + matrix[:, 2]


def face_mask(shape: tuple[int, ...], landmarks: np.ndarray, kind: str = "hull",
              erode: float = 0.0, blur: float = 0.0) -> np.ndarray:
    """Soft face mask, ``(H, W)`` float32 in [0, 1], for a frame of ``shape`` (``(H, W)`` or
    ``(H, W, C)``).

    The convex hull of the template outline (``kind="hull"``) or the template ellipse is mapped
    onto the face, filled, eroded by ``erode`` and blurred with Gaussian sigma ``blur`` (both
    fractions of :func:`face_size`). Whatever falls outside the frame is cut: the frame border
    neither erodes the mask nor fails. Work is done in the face's bounding box only.
    """
    height, width = int(shape[0]), int(shape[1])
    size = face_size(landmarks)
    polygon = face_outline(landmarks, kind)
    if kind == "hull":
        polygon = cv2.convexHull(polygon.astype(np.float32))[:, 0, :].astype(np.float64)
    radius = round(erode * size)
    sigma = blur * size
    margin = math.ceil(4.0 * sigma) + 2  # GaussianBlur's float kernel reaches 4 sigma
    x0 = max(math.floor(polygon[:, 0].min()) - margin, 0)
    y0 = max(math.floor(polygon[:, 1].min()) - margin, 0)
    x1 = min(math.ceil(polygon[:, 0].max()) + margin + 1, width)
    y1 = min(math.ceil(polygon[:, 1].max()) + margin + 1, height)
    mask = np.zeros((height, width), np.float32)
    if x0 >= x1 or y0 >= y1:  # the face lies wholly outside the frame
        return mask
    roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
    scaled = np.round((polygon - [x0, y0]) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(roi, [scaled], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        # the default border value leaves pixels at the frame edge un-eroded: the face goes on
        roi = cv2.erode(roi, kernel)
    soft = roi.astype(np.float32)
    if sigma > 0.0:
        # the ROI edge is either the frame edge (reflect: the face goes on) or >= 4 sigma of
        # zeros away from the polygon, so blurring the ROI equals blurring the whole frame
        soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                borderType=cv2.BORDER_REFLECT_101)
    mask[y0:y1, x0:x1] = np.clip(soft, 0.0, 1.0)
    return mask


# --- the transformed copy --------------------------------------------------------------------

def _check_frame(frame_bgr: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame_bgr)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"expected a (H, W, 3) uint8 BGR frame, got {frame.shape} {frame.dtype}")
    return frame


def _transform_float(frame: np.ndarray, landmarks: np.ndarray, params: BlendParams) -> np.ndarray:
    """The transformed copy as float32 on the 0..255 scale (unrounded, unclipped below 0..255
    only where a step clips)."""
    img = frame.astype(np.float32)
    if params.hue != 0.0 or params.saturation != 1.0:
        # float HSV: H in degrees [0, 360), S in [0, 1], V on the input's scale
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + params.hue, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * params.saturation, 0.0, 1.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if params.contrast != 1.0 or params.brightness != 0.0:
        img = (img - 127.5) * params.contrast + 127.5 + params.brightness * 255.0
    img = np.clip(img, 0.0, 255.0)
    size = face_size(landmarks)
    if params.filter != "none" and params.filter_sigma * size > 0.0:
        sigma = params.filter_sigma * size
        smooth = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT_101)
        img = smooth if params.filter == "blur" else np.clip(
            img + params.sharpen_amount * (img - smooth), 0.0, 255.0)
    if params.scale != 1.0 or params.shift_x != 0.0 or params.shift_y != 0.0:
        centre = np.asarray(landmarks, dtype=np.float64).mean(axis=0)
        shift = np.array([params.shift_x, params.shift_y]) * size
        matrix = np.zeros((2, 3))
        matrix[:, :2] = params.scale * np.eye(2)
        matrix[:, 2] = centre - params.scale * centre + shift
        img = cv2.warpAffine(img, matrix, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
    return img


def transform_source(frame_bgr: np.ndarray, landmarks: np.ndarray,
                     params: BlendParams) -> np.ndarray:
    """The copy that gets blended in, uint8 BGR like the frame: colour jitter (hue, saturation
    in HSV; contrast about mid-grey and brightness), then an optional sharpen (unsharp mask) or
    blur, then a scale about the landmarks' centroid plus a shift (borders reflected, so no
    black bands)."""
    frame = _check_frame(frame_bgr)
    return np.clip(np.rint(_transform_float(frame, landmarks, params)), 0, 255).astype(np.uint8)


def self_blend(frame_bgr: np.ndarray, landmarks: np.ndarray,
               params: BlendParams) -> tuple[np.ndarray, np.ndarray]:
    """The self-blended pseudo-fake of one face and its blend weight.

    ``out = src * w + frame * (1 - w)`` with ``w = face_mask(...) * params.ratio``, computed in
    float from the unrounded transformed copy and rounded once. Returns ``(out, w)``: ``out``
    uint8 BGR, ``w`` the ``(H, W)`` float32 weight actually used (0 where the frame is
    untouched), the natural target for a blending-boundary label.

    Only the face's neighbourhood is transformed: the box where ``w > 0``, padded by the
    farthest the warp and the filter reach into the frame (every step is either per pixel, a
    warp that moves a pixel at most ``|scale - 1| * distance + shift``, or a Gaussian read to
    4 sigma), so a 1080p frame costs what its face costs and the result equals transforming
    the whole frame.
    """
    frame = _check_frame(frame_bgr)
    weight = face_mask(frame.shape, landmarks, params.mask, params.erode, params.blur)
    weight *= np.float32(params.ratio)
    out = frame.copy()
    rows = np.flatnonzero(weight.any(axis=1))
    if not len(rows):
        return out, weight
    cols = np.flatnonzero(weight.any(axis=0))
    size = face_size(landmarks)
    marks = np.asarray(landmarks, dtype=np.float64)
    centre = marks.mean(axis=0)
    corners = np.array([[cols[0], rows[0]], [cols[-1], rows[-1]]], dtype=np.float64)
    reach = float(np.abs(corners - centre).max()) + 1.0
    pad = math.ceil(abs(params.scale - 1.0) * reach / max(params.scale, 1e-6)
                    + max(abs(params.shift_x), abs(params.shift_y)) * size / max(
                        params.scale, 1e-6)
                    + 4.0 * params.filter_sigma * size) + 4
    y0, y1 = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + 1 + pad, frame.shape[0])
    x0, x1 = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + 1 + pad, frame.shape[1])
    source = _transform_float(frame[y0:y1, x0:x1], marks - [x0, y0], params)
    w = weight[y0:y1, x0:x1, None]
    region = source * w + frame[y0:y1, x0:x1].astype(np.float32) * (1.0 - w)
    out[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out, weight
