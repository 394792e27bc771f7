"""``spectrum``: the 1-D power spectrum of a face crop (Durall et al., 2019).

"Unmasking DeepFakes with simple Features" (Durall, Keuper, Pfreundt, Keuper; arXiv:1911.00686)
turns an image into the azimuthal average of its log-magnitude Fourier spectrum: up-sampling
layers of generators leave their mark on the high-frequency end of that curve, where a linear
classifier can see it. The steps, vectorised over the batch:

1. grey level, ``0.299 R + 0.587 G + 0.114 B`` (the luma of ``cv2.imread(path, 0)`` in the
   paper's code, kept in floating point instead of being rounded to uint8);
2. 2-D DFT and log magnitude ``20 * ln(|F| + 1e-8)``;
3. azimuthal average: the mean of that log magnitude over each ring of integer radius
   ``round(sqrt(kx^2 + ky^2))`` around the zero frequency, out to the corners of the spectrum
   (radius ``S / sqrt(2)``: the diagonal frequencies where checkerboard artifacts sit). The
   usual ``fftshift`` is implicit: the radius is computed from the signed frequency indices. Only
   the half-spectrum of ``rfft2`` is computed, with the columns that stand for two mirrored
   frequencies counted twice, so each ring average equals the full-spectrum one exactly;
4. the ring profile (radius 0, 1, ..., R) resampled onto :data:`DEFAULT_BINS` = 64 bins, so the
   feature's length does not depend on the crop size (the paper interpolates to a fixed length
   too): bin 0 is the zero frequency alone, bins 1..63 sit evenly from radius R/63 to R and
   each averages the rings it covers with tent weights (at 256 px, R = 181: ~3 rings a bin);
5. per-sample normalisation as in the paper's code (``interpolated /= interpolated[0]``):
   divided by the value at zero frequency, so bin 0 is always exactly 1.

Crop: ``CropSpec(256, 0.0)``, the inner face only. All four FaceForensics++ methods (and face
swaps in general) synthesise the inner face and paste it into a real frame, so the background,
hair and ears a margin keeps are genuine camera pixels in real and fake alike and would only
dilute the signal; the paper's own FaceForensics++ experiments crop the inner face too. The
size is set by the frequencies of interest: at 256 px the eyes are 80 px apart, about what
YuNet finds in the FF++ videos of ``../shared/data`` (median ~90 px, 70-140), so the
alignment warp (bilinear, no anti-aliasing) neither folds the top octave back by shrinking the
face nor fills it with the warp's own interpolation spectrum by enlarging it, as a 128 px crop
(eyes 40 px apart, a 2x shrink) would.

On ``../shared/data``'s FF++ videos (57 videos, 9 groups, leave-one-group-out logistic
regression) this feature scores at chance for every crop and normalisation tried (video AUC
0.49-0.59 against a noise band of +-0.09): heavily compressed c40 video keeps little of the
high-frequency band the method reads. Expect it to help on high-resolution images (the paper's
Faces-HQ and CelebA) more than on compressed video.

Output: ``(n, 64)`` float32. No weights, no network; a few ms per crop on one CPU core.
"""

from __future__ import annotations

import numpy as np

from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.tf import check_device
from fakeprobe.errors import ConfigError
from fakeprobe.extractor.base import BACKBONES, Backbone

__all__ = ["DEFAULT_BINS", "SPECTRUM_CROP", "SpectrumBackbone", "radial_profile_matrix"]

#: Crop of the spectrum feature: the inner face at 256 px (see the module docstring).
SPECTRUM_CROP = CropSpec(256, 0.0)
#: Length of the resampled profile.
DEFAULT_BINS = 64
#: Added to |F| before the logarithm, as in the paper's code.
LOG_EPS = 1e-8
#: ITU-R BT.601 luma weights, for RGB crops.
LUMA_RGB = np.array([0.299, 0.587, 0.114])


def _ring_index(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer ring radius and multiplicity of each ``rfft2`` coefficient of a square image.

    Column ``kx`` of the half-spectrum stands for ``kx`` and ``-kx`` of the full one, except
    ``kx = 0`` and, for even sizes, the Nyquist column ``kx = size / 2``.
    """
    ky = np.fft.fftfreq(size) * size  # 0, 1, ..., -2, -1
    kx = np.fft.rfftfreq(size) * size  # 0, 1, ..., size // 2
    radius = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64)
    twice = (kx > 0) & (kx < size / 2)
    multiplicity = np.broadcast_to(np.where(twice, 2.0, 1.0)[None, :], radius.shape)
    return radius, multiplicity


def radial_profile_matrix(size: int, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The linear map from a flattened ``rfft2`` log magnitude to the resampled ring profile.

    ``(size * (size // 2 + 1), bins)`` float64. Column 0 is exactly the zero-frequency
    coefficient. Column ``j >= 1`` is a tent-weighted mean of the rings of radius ``>= 1`` around
    ``p_j = j * R / (bins - 1)``, ``R`` the largest ring radius: weights ``1 - |r - p_j| / h``
    with ``h`` the spacing of the ``p_j`` (at least 1), so when there are fewer bins than rings
    each bin averages the rings it stands for, and when there are more it is plain linear
    interpolation. The zero frequency never leaks into the other bins.
    """
    if size < 2:
        raise ConfigError(f"the spectrum needs crops of at least 2 px, got {size}")
    if bins < 2:
        raise ConfigError(f"the spectrum needs at least 2 bins, got {bins}")
    radius, multiplicity = _ring_index(size)
    rings = int(radius.max()) + 1
    # pixel -> ring mean (every integer ring 0..R holds pixels for a square image)
    to_ring = np.zeros((radius.size, rings))
    to_ring[np.arange(radius.size), radius.ravel()] = multiplicity.ravel()
    to_ring /= to_ring.sum(axis=0)
    # ring profile -> bins: bin 0 is the DC ring, the others tent filters over rings 1..R
    last = rings - 1
    spacing = last / (bins - 1)
    width = max(1.0, spacing)
    centres = np.arange(1, bins) * spacing
    ring_radius = np.arange(1, rings, dtype=np.float64)
    tent = np.clip(1.0 - np.abs(ring_radius[:, None] - centres[None, :]) / width, 0.0, None)
    resample = np.zeros((rings, bins))
    resample[0, 0] = 1.0
    resample[1:, 1:] = tent / tent.sum(axis=0)
    return to_ring @ resample


class SpectrumBackbone(Backbone):
    """Durall et al.'s azimuthally averaged DFT spectrum of the grey crop (module docstring)."""

    name = "spectrum"

    def __init__(self, size: int = SPECTRUM_CROP.size, margin: float = SPECTRUM_CROP.margin,
                 bins: int = DEFAULT_BINS, device: str = "auto", **_: object) -> None:
        check_device(device)  # numpy: runs on the CPU whatever is asked
        self.crop = CropSpec(int(size), float(margin))
        self.dim = int(bins)
        self._matrix = radial_profile_matrix(self.crop.size, self.dim)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = self.check_crops(crops)
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        grey = crops @ LUMA_RGB  # (n, S, S) float64
        log_magnitude = 20.0 * np.log(np.abs(np.fft.rfft2(grey, axes=(1, 2))) + LOG_EPS)
        profile = log_magnitude.reshape(n, -1) @ self._matrix
        dc = log_magnitude[:, 0, 0]
        # |F(0)| + eps == 1 exactly would give 0; any other value keeps its sign
        dc = np.where(dc == 0.0, 1.0, dc)
        return (profile / dc[:, None]).astype(np.float32)

    def config(self) -> dict:
        return {**super().config(), "method": "durall2019-azimuthal-dft", "grey": "bt601",
                "log": "20*ln(|F|+1e-8)", "rings": "round(radius), to the corners",
                "resample": "linear", "normalise": "divide by zero-frequency bin"}


@BACKBONES.register(
    "spectrum",
    description="Durall et al. 2019 azimuthal DFT spectrum of the grey inner face, 64-d, "
                "256px; no weights",
)
def create_spectrum(device: str = "auto", **kwargs) -> Backbone:
    return SpectrumBackbone(device=device, **kwargs)
