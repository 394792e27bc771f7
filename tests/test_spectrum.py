"""The ``spectrum`` backbone (Durall et al. 2019): known answers on synthetic crops."""

from __future__ import annotations

import numpy as np
import pytest

from fakeprobe.errors import FakeprobeError
from fakeprobe.extractor.backbones import spectrum as spectrum_module  # registers "spectrum"
from fakeprobe.extractor.backbones.spectrum import (
    DEFAULT_BINS,
    SPECTRUM_CROP,
    SpectrumBackbone,
    radial_profile_matrix,
)
from fakeprobe.extractor.base import BACKBONES

SIZE = SPECTRUM_CROP.size  # 256
#: Largest ring radius of a 256 px spectrum: round(128 * sqrt(2)) = round(181.02).
LAST_RING = 181


@pytest.fixture(scope="module")
def backbone() -> SpectrumBackbone:
    """The registered ``spectrum`` backbone with its default settings (256 px, 64 bins)."""
    return BACKBONES.create("spectrum")


def grey_crops(images: np.ndarray) -> np.ndarray:
    """``(n, S, S)`` grey levels in [0, 255] as uint8 RGB crops with equal channels."""
    grey = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def grating(kx: int, ky: int, size: int = SIZE, amplitude: float = 100.0) -> np.ndarray:
    """A plane cosine wave with ``kx``, ``ky`` cycles across the crop, around grey 128."""
    y, x = np.mgrid[0:size, 0:size] / size
    return 128.0 + amplitude * np.cos(2 * np.pi * (kx * x + ky * y))


def reference_profile(grey: np.ndarray, bins: int) -> np.ndarray:
    """The feature computed the slow, obvious way: full fft2, fftshift, a loop over rings."""
    size = grey.shape[0]
    log_magnitude = 20 * np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey))) + 1e-8)
    y, x = np.indices(grey.shape)
    radius = np.rint(np.hypot(x - size // 2, y - size // 2)).astype(int)
    rings = np.array([log_magnitude[radius == r].mean() for r in range(radius.max() + 1)])
    last = len(rings) - 1
    spacing = last / (bins - 1)
    width = max(1.0, spacing)
    out = [rings[0]]
    for j in range(1, bins):
        weights = np.clip(1 - np.abs(np.arange(1, last + 1) - j * spacing) / width, 0, None)
        out.append((weights * rings[1:]).sum() / weights.sum())
    return np.array(out) / rings[0]


def test_registered_with_metadata():
    entry = BACKBONES.entry("spectrum")
    assert entry.description and not entry.missing()
    backbone = entry.factory()
    assert backbone.name == "spectrum"
    assert backbone.dim == DEFAULT_BINS == 64
    assert backbone.crop == SPECTRUM_CROP
    config = backbone.config()
    assert config["name"] == "spectrum" and config["dim"] == 64 and config["crop_size"] == 256


def test_shape_dtype_finite_and_dc_bin_is_one(backbone):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    out = backbone.embed(crops)
    assert out.shape == (5, 64) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 0], 1.0, rtol=1e-6)


def test_matches_a_slow_full_spectrum_reference():
    """The rfft2 half-spectrum with doubled columns equals the full fftshift-ed spectrum."""
    rng = np.random.default_rng(1)
    for size, bins in ((SIZE, 64), (31, 16), (16, 40)):  # fewer, odd-sized and more bins
        crops = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        out = SpectrumBackbone(size=size, bins=bins).embed(crops)
        for crop, row in zip(crops, out):
            grey = crop @ spectrum_module.LUMA_RGB
            np.testing.assert_allclose(row, reference_profile(grey, bins), rtol=1e-5, atol=1e-6)


def test_constant_crop_is_flat_except_dc(backbone):
    out = backbone.embed(grey_crops(np.full((1, SIZE, SIZE), 90.0)))[0]
    assert out[0] == pytest.approx(1.0)
    rest = out[1:]
    # nothing but the zero frequency: every ring holds log(eps), far below the DC value
    assert np.ptp(rest) < 1e-3 * np.abs(rest).mean()
    assert rest.max() < 0.0 < out[0]


def flat_spectrum_noise(size: int = SIZE, std: float = 12.0, seed: int = 2) -> np.ndarray:
    """Zero-mean noise whose Fourier magnitude is the same at every non-zero frequency."""
    spectrum = np.fft.fft2(np.random.default_rng(seed).normal(size=(size, size)))
    spectrum /= np.abs(spectrum)
    spectrum[0, 0] = 0.0
    image = np.real(np.fft.ifft2(spectrum))
    return image * std / image.std()


def test_flat_magnitude_gives_flat_profile(backbone):
    out = backbone.embed(grey_crops(128.0 + flat_spectrum_noise()[None]))[0]
    # only uint8 rounding (std 0.29 against 12) disturbs the equal rings
    assert np.ptp(out[1:]) < 2e-3 * np.abs(out[1:]).mean()


@pytest.mark.parametrize(
    ("kx", "ky", "expected_bin"),
    [
        (29, 0, 10),  # bins sit at j * 181 / 63: radius 29 -> 10.09
        (0, 58, 20),  # 20.19
        (20, 21, 10),  # diagonal, radius exactly 29
        (87, 0, 30),  # 30.28
        (106, 106, 52),  # near the corner: radius 149.9 -> 52.18
    ],
)
def test_grating_peaks_at_its_radius(backbone, kx, ky, expected_bin):
    """A cosine of radius ``sqrt(kx^2 + ky^2)`` on a flat-spectrum floor peaks in that bin."""
    image = grating(kx, ky, amplitude=50.0) + flat_spectrum_noise()
    assert image.min() > 0 and image.max() < 255  # no clipping
    out = backbone.embed(grey_crops(image[None]))[0]
    assert int(np.argmax(out[1:])) + 1 == expected_bin
    floor = np.median(out[1:])
    # the peak stands well clear of the bins away from it; the first and last few bins are
    # averages of small rings (8 pixels at radius 1, 1 at the corner), noisy under uint8 rounding
    away = np.abs(np.arange(DEFAULT_BINS) - expected_bin) > 1
    away[:4] = away[-3:] = False
    assert out[expected_bin] - floor > 2 * np.abs(out[away] - floor).max()
    assert np.hypot(kx, ky) * 63 / LAST_RING == pytest.approx(expected_bin, abs=0.5)


def test_batch_equals_one_by_one(backbone):
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (7, SIZE, SIZE, 3), dtype=np.uint8)
    together = backbone.embed(crops)
    alone = np.concatenate([backbone.embed(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)


def test_brightness_offset_changes_only_dc_dependent_scale(backbone):
    """Adding a constant moves only the zero frequency: unnormalised rings stay the same."""
    rng = np.random.default_rng(4)
    grey = rng.uniform(40, 200, (1, SIZE, SIZE))
    a = backbone.embed(grey_crops(grey))[0]
    b = backbone.embed(grey_crops(grey + 20))[0]
    # profile = rings / dc  =>  a * dc_a == b * dc_b for every ring but the first
    dc_a = 20 * np.log(np.rint(grey).sum())
    dc_b = 20 * np.log(np.rint(grey + 20).sum())
    np.testing.assert_allclose(a[1:] * dc_a, b[1:] * dc_b, rtol=1e-4)


def test_empty_batch_and_bad_input(backbone):
    assert backbone.embed(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, 64)
    with pytest.raises(ValueError, match="uint8"):
        backbone.embed(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="256"):
        backbone.embed(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(FakeprobeError, match="device"):
        SpectrumBackbone(device="tpu")


def test_profile_matrix_columns_are_averages():
    matrix = radial_profile_matrix(SIZE, 64)
    assert matrix.shape == (SIZE * (SIZE // 2 + 1), 64)
    # each column is a weighted mean of half-spectrum coefficients (mirrored ones weigh double)
    assert np.all(matrix >= 0)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, rtol=1e-12)
    assert matrix[0, 0] == 1.0 and np.count_nonzero(matrix[:, 0]) == 1
    assert np.all(matrix[0, 1:] == 0.0)  # the zero frequency stays out of the other bins
