"""Artifact feature sets (``cnn-stats``, ``srm``, ``face-context``): known answers on synthetic
crops, exact invariances, the crop geometry of the two face regions, and one check of
``cnn-stats`` against the Keras network run directly."""

from __future__ import annotations

import itertools
from collections import Counter

import cv2
import numpy as np
import pytest

from conftest import require_core
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import template_for
from fakeprobe.errors import FakeprobeError
from fakeprobe.extractor.backbones.artifacts import (ARTIFACT_CROP, FILTER_REACH, INNER_ERODE_112,
                                                     REGION_STATS, RING_GAP_112, SRM_RESIDUALS,
                                                     FaceContextBackbone, SrmBackbone,
                                                     context_masks, cooccurrence_orbits)
from fakeprobe.extractor.components import BACKBONES

SIZE = ARTIFACT_CROP.size  # 224
STAT = {name: k for k, name in enumerate(REGION_STATS)}  # index of a statistic in a region block
N_STATS = len(REGION_STATS)


@pytest.fixture(scope="module")
def srm() -> SrmBackbone:
    """The registered ``srm`` backbone with its default settings (224 px, margin 0.1)."""
    return BACKBONES.create("srm")


@pytest.fixture(scope="module")
def context() -> FaceContextBackbone:
    """The registered ``face-context`` backbone with its default settings (224 px, margin 0.1)."""
    return BACKBONES.create("face-context")


def random_crops(n: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def textured_crop(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A smooth colour pattern plus Gaussian noise (std 8), away from 0 and 255 (no clipping)."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([120 + 40 * np.sin(6 * x), 110 + 30 * np.cos(5 * y), 100 + 20 * x * y], -1)
    noisy = base + np.random.default_rng(seed).normal(0, 8, base.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def test_registered_in_components():
    names = BACKBONES.names()
    for name in ("cnn-stats", "srm", "face-context"):
        assert name in names and BACKBONES.entry(name).description
    assert "tensorflow" in BACKBONES.entry("cnn-stats").requires
    assert not BACKBONES.entry("srm").requires and not BACKBONES.entry("face-context").requires


# --- srm -------------------------------------------------------------------------------------

def test_orbits_are_the_sign_and_mirror_classes():
    orbit = cooccurrence_orbits(3, 2)
    assert orbit.shape == (125,) and orbit.max() + 1 == 39  # Burnside: (125 + 1 + 25 + 5) / 4
    assert cooccurrence_orbits(4, 2).max() + 1 == 169  # the SRM's order-4 count
    runs = list(itertools.product(range(-2, 3), repeat=3))
    for i, run in enumerate(runs):
        neg = tuple(-d for d in run)
        for other in (neg, run[::-1], neg[::-1]):
            assert orbit[runs.index(other)] == orbit[i]
    assert orbit[runs.index((1, 0, 0))] != orbit[runs.index((0, 1, 0))]


def reference_srm(crop: np.ndarray) -> np.ndarray:
    """One crop the slow, obvious way: loops over kernel taps, Counters of triples, canonical
    forms as the smallest of a run, its negative and their mirror images."""
    grey = crop.astype(np.int64) @ np.array([299, 587, 114])  # x1000, exact
    canon = {}
    for run in itertools.product(range(-2, 3), repeat=3):
        neg = tuple(-d for d in run)
        canon[run] = min(run, neg, run[::-1], neg[::-1])
    classes = sorted(set(canon.values()), key=lambda c: list(itertools.product(
        range(-2, 3), repeat=3)).index(c))
    hists, energy = [], []
    for residual in SRM_RESIDUALS:
        kernel = np.array(residual.kernel)
        counts, values = Counter(), []
        for k, scan_rows in ((kernel, True), (kernel.T, False)):
            kh, kw = k.shape
            h, w = grey.shape[0] - kh + 1, grey.shape[1] - kw + 1
            res = sum(k[dy, dx] * grey[dy:dy + h, dx:dx + w]
                      for dy in range(kh) for dx in range(kw)) / (1000 * residual.q)
            if scan_rows or not np.array_equal(kernel, kernel.T):
                values.append(res.ravel())
            codes = np.clip(np.rint(res), -2, 2).astype(int)
            lines = codes if scan_rows else codes.T
            for line in lines:
                for j in range(len(line) - 2):
                    counts[canon[tuple(line[j:j + 3])]] += 1
        total = sum(counts.values())
        hists.append([counts[c] / total for c in classes])
        values = np.concatenate(values)
        energy.append([np.log(np.sqrt(np.mean(values**2)) + 0.05),
                       np.log(np.mean(np.abs(values)) + 0.05)])
    return np.concatenate([np.ravel(hists), np.ravel(energy)])


def test_srm_matches_a_slow_reference():
    backbone = SrmBackbone(size=24)  # small: the reference loops in Python
    crops = np.concatenate([random_crops(1, seed=1, size=24), textured_crop(size=24)[None]])
    out = backbone.embed(crops)
    for crop, row in zip(crops, out):
        np.testing.assert_allclose(row, reference_srm(crop), rtol=1e-6, atol=1e-7)


def test_srm_shape_dtype_determinism_batching(srm):
    assert srm.dim == 205 and (srm.crop.size, srm.crop.margin) == (224, CONTEXT_MARGIN)
    crops = random_crops(5, seed=2)
    crops[1] = textured_crop()
    out = srm.embed(crops)
    assert out.shape == (5, 205) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(srm.embed(crops), out)
    alone = np.concatenate([srm.embed(crops[i:i + 1]) for i in range(len(crops))])
    np.testing.assert_array_equal(alone, out)
    # each residual's 39 class frequencies sum to 1
    np.testing.assert_allclose(out[:, :195].reshape(5, 5, 39).sum(axis=2), 1.0, rtol=1e-6)


def zero_class_frequency(features: np.ndarray) -> np.ndarray:
    """Frequency of the all-zero run (0, 0, 0) of each residual, ``(5,)``."""
    zero = cooccurrence_orbits()[62]  # (0, 0, 0) is bin 2 * 25 + 2 * 5 + 2
    return features[:195].reshape(5, 39)[:, zero]


def test_srm_flat_crop_is_all_zero_runs(srm):
    out = srm.embed(np.full((1, SIZE, SIZE, 3), 77, np.uint8))[0]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(zero_class_frequency(out), 1.0)
    np.testing.assert_allclose(out[195:], np.log(0.05), rtol=1e-6)  # no residual energy


def test_srm_linear_ramp_known_answer(srm):
    """Grey ``16 + x``: the 1st-order residual is 1 along rows and 0 down columns; every
    higher-order kernel cancels a ramp."""
    ramp = np.repeat(np.broadcast_to(16 + np.arange(SIZE), (SIZE, SIZE))[..., None], 3, -1)
    out = srm.embed(ramp.astype(np.uint8)[None])[0]
    np.testing.assert_allclose(zero_class_frequency(out), [0.5, 1, 1, 1, 1], rtol=1e-6)
    ones = cooccurrence_orbits()[3 * 25 + 3 * 5 + 3]  # the run (1, 1, 1)
    assert out[ones] == pytest.approx(0.5)
    assert out[195:197] == pytest.approx([np.log(np.sqrt(0.5) + 0.05), np.log(0.5 + 0.05)])
    np.testing.assert_allclose(out[197:], np.log(0.05), rtol=1e-6)


def test_srm_smooth_gradient_differs_from_noise(srm):
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    gradient = np.repeat((40 + 0.3 * x + 0.2 * y).astype(np.uint8)[..., None], 3, -1)
    noise = np.clip(128 + np.random.default_rng(3).normal(0, 10, (SIZE, SIZE, 3)), 0, 255)
    smooth, rough = srm.embed(np.stack([gradient, noise.astype(np.uint8)]))
    # a ramp leaves only the uint8 staircase: many more all-zero runs than noise leaves
    assert (zero_class_frequency(smooth) > 0.05).all()
    assert (zero_class_frequency(rough) < 0.001).all()
    assert np.abs(smooth[:195] - rough[:195]).sum() > 5.0  # of 10: the histograms barely meet
    assert (rough[195:] > smooth[195:] + 1.0).all()  # log energies, far apart


@pytest.mark.parametrize("transform", [
    lambda c: c + 25,  # brightness offset: every kernel sums to zero
    lambda c: 255 - c,  # negation: classes are sign-symmetric
    lambda c: c[:, ::-1],  # mirror: classes are mirror-symmetric
    lambda c: c[::-1],
    lambda c: np.rot90(c),  # h and v are pooled
    lambda c: c.transpose(1, 0, 2),
], ids=["offset", "negate", "flip-lr", "flip-ud", "rot90", "transpose"])
def test_srm_exact_invariances(srm, transform):
    crop = np.clip(textured_crop(seed=4), 20, 220)  # no clipping under the offset
    other = np.ascontiguousarray(transform(crop.astype(np.int32))).astype(np.uint8)
    assert not np.array_equal(other, crop)
    np.testing.assert_array_equal(srm.embed(other[None]), srm.embed(crop[None]))


def test_srm_config_and_bad_input(srm):
    config = srm.config()
    assert config["name"] == "srm" and config["dim"] == 205 and config["version"] == 1
    assert config["T"] == 2 and config["order"] == 3
    # SRM's quantisation step "Q1": each kernel's central coefficient
    assert {name: r["q"] for name, r in config["residuals"].items()} == {
        "1st": 1, "2nd": 2, "3rd": 3, "KB": 4, "KV": 12}
    assert srm.embed(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, 205)
    with pytest.raises(ValueError, match="224"):
        srm.embed(np.zeros((1, 160, 160, 3), np.uint8))
    with pytest.raises(FakeprobeError, match="device"):
        SrmBackbone(device="tpu")


# --- face-context ----------------------------------------------------------------------------

def test_masks_geometry():
    inner, ring = context_masks(ARTIFACT_CROP)
    assert inner.shape == ring.shape == (SIZE, SIZE)
    assert inner.sum() > 5000 and ring.sum() > 3000
    assert not (inner & ring).any()
    for mask in (inner, ring):  # clear of the border by the filters' reach
        ys, xs = np.nonzero(mask)
        assert ys.min() >= FILTER_REACH and xs.min() >= FILTER_REACH
        assert ys.max() < SIZE - FILTER_REACH and xs.max() < SIZE - FILTER_REACH
    # a band separates them: the erosion plus the gap, in crop pixels
    scale = SIZE / 112 / (1 + 2 * CONTEXT_MARGIN)
    distance = cv2.distanceTransform((~inner).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert distance[ring].min() > (INNER_ERODE_112 + RING_GAP_112) * scale - 2
    # eyes, nose and mouth corners of the template lie in the inner face
    for x, y in np.rint(template_for(ARTIFACT_CROP)).astype(int):
        assert inner[y, x]
    # the ring surrounds the inner face on the left, right and top
    iy, ix = np.nonzero(inner)
    ry, rx = np.nonzero(ring)
    assert rx.min() < ix.min() and rx.max() > ix.max() and ry.min() < iy.min()


def test_face_context_shape_flat_and_batching(context):
    assert context.dim == 27 and (context.crop.size, context.crop.margin) == (224, CONTEXT_MARGIN)
    flat = context.embed(np.full((1, SIZE, SIZE, 3), 128, np.uint8))[0]
    assert np.isfinite(flat).all()
    np.testing.assert_array_equal(flat[2 * N_STATS:], 0.0)  # same statistics in both regions
    crops = random_crops(4, seed=5)
    crops[0] = textured_crop()
    out = context.embed(crops)
    assert out.shape == (4, 27) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(context.embed(crops), out)
    alone = np.concatenate([context.embed(crops[i:i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(alone, out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[:, 2 * N_STATS:], out[:, :N_STATS] - out[:, N_STATS:2 * N_STATS],
                               rtol=1e-5, atol=1e-5)


def test_blurred_inner_face_lowers_its_noise_and_sharpness(context):
    crop = textured_crop(seed=6)
    blurred = crop.copy()
    whole = cv2.GaussianBlur(crop, (0, 0), 1.5)
    blurred[context.inner_mask] = whole[context.inner_mask]
    before, after = context.embed(np.stack([crop, blurred]))
    ring = slice(N_STATS, 2 * N_STATS)
    np.testing.assert_array_equal(after[ring], before[ring])  # the ring never sees the blur
    diff = 2 * N_STATS
    assert after[diff + STAT["log_noise"]] < before[diff + STAT["log_noise"]] - 1.0
    assert after[diff + STAT["log_sharp1"]] < before[diff + STAT["log_sharp1"]] - 0.5


def test_colour_shifted_inner_face_moves_the_colour_differences(context):
    crop = textured_crop(seed=7)
    # shifted: the inner face and 3 px around it, so the 3x3 noise residual sees no edge in
    # the inner face; the ring stays more than FILTER_REACH away
    region = cv2.dilate(context.inner_mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    shifted = crop.astype(np.int32)
    shifted[region] += (30, 0, -20)  # redder and less blue: a up, b up
    shifted = np.clip(shifted, 0, 255).astype(np.uint8)
    before, after = context.embed(np.stack([crop, shifted]))
    np.testing.assert_array_equal(after[N_STATS:2 * N_STATS], before[N_STATS:2 * N_STATS])
    diff = 2 * N_STATS
    assert after[diff + STAT["a_mean"]] > before[diff + STAT["a_mean"]] + 5
    assert after[diff + STAT["b_mean"]] > before[diff + STAT["b_mean"]] + 5
    # the noise is untouched by a constant shift (no pixel clips): float32 round-off only
    assert after[diff + STAT["log_noise"]] == pytest.approx(before[diff + STAT["log_noise"]],
                                                            abs=1e-4)


def test_pixels_away_from_both_regions_do_not_count(context):
    crop = textured_crop(seed=8)
    used = (context.inner_mask | context.ring_mask).astype(np.uint8)
    reach = cv2.dilate(used, np.ones((2 * FILTER_REACH + 1,) * 2, np.uint8)).astype(bool)
    assert (~reach).sum() > 1000  # the corners, the border and the band between the regions
    other = crop.copy()
    other[~reach] = random_crops(1, seed=9)[0][~reach]
    np.testing.assert_array_equal(context.embed(other[None]), context.embed(crop[None]))


def test_face_context_config_and_bad_input(context):
    config = context.config()
    assert config["name"] == "face-context" and config["version"] == 1
    assert config["stats"] == list(REGION_STATS) and config["dim"] == 27
    assert context.embed(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, 27)
    with pytest.raises(ValueError, match="uint8"):
        context.embed(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="larger crop"):
        FaceContextBackbone(size=24)
    with pytest.raises(FakeprobeError, match="device"):
        FaceContextBackbone(device="tpu")


# --- cnn-stats (TensorFlow: one test) -------------------------------------------------------

def test_cnn_stats_matches_the_keras_network():
    """Against the ported MobileNetV2 run directly: layer outputs pooled in numpy."""
    entry = BACKBONES.entry("cnn-stats")
    require_core("cnn-stats", entry.missing())
    import keras

    from fakeprobe.extractor.backbones import imagenet
    from fakeprobe.extractor.torch_reader import load_state_dict

    backbone = BACKBONES.create("cnn-stats", device="cpu", batch_size=2)
    assert backbone.dim == 272 and (backbone.crop.size, backbone.crop.margin) == (224, 0.1)
    crops = random_crops(3, seed=10)
    crops[1] = textured_crop()
    crops[2] = 90  # flat
    out = backbone.embed(crops)  # one full batch and one partial
    assert out.shape == (3, 272) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(backbone.embed(crops), out)

    spec = imagenet.MOBILENET_V2
    path = imagenet.default_weights_path(spec)
    full = imagenet.build_mobilenet_v2(imagenet.StateDict(load_state_dict(path), str(path)))
    layers = {"block1_project": (112, 16), "block3_add": (56, 24), "block6_add": (28, 32),
              "block10_add": (14, 64)}
    taps = keras.Model(full.input, [full.get_layer(name).output for name in layers])
    x = (crops[:2].astype(np.float32) - np.array(spec.mean, np.float32)) / np.array(
        spec.std, np.float32)
    expected = []
    for maps, (size, channels) in zip(taps(x, training=False), layers.values()):
        maps = np.asarray(maps, np.float64)
        assert maps.shape == (2, size, size, channels)
        expected += [maps.mean(axis=(1, 2)), maps.std(axis=(1, 2))]
    np.testing.assert_allclose(out[:2], np.concatenate(expected, axis=1), rtol=1e-4, atol=1e-4)

    config = backbone.config()
    assert config["weights_sha256"] == spec.sha256 and config["version"] == 1
    assert config["layers"] == list(layers) and config["name"] == "cnn-stats"
