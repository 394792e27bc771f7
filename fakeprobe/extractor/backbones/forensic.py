"""``forensic``: fakeprobe's own face encoder, trained to see manipulation, shipped inside the
package.

Frozen ImageNet and face-recognition networks describe who is in a picture; no registry ships
weights trained on forgeries. fakeprobe trains its own (``benchmarks/forensic_encoder.py``, the
recipe: an ImageNet EfficientNet-Lite0 fine-tuned by ``fakeprobe finetune`` on DFDC face crops
and self-blended pseudo-fakes) and ships the result here: the 128-d ``embedding`` layer is the
feature set, the same as the ``finetuned`` backbone gives for a network of your own. What it
was trained on, how it was measured and where it fails: ``fakeprobe/weights/FORENSIC_CARD.md``.

The weights file (:data:`WEIGHTS_FILE`) is plain data, read with ``numpy.load(...,
allow_pickle=False)``: the network's architecture as Keras JSON (standard layers only; a file
naming any other layer class is refused), its weights in float16 (half the size; features
match the float32 network to about 1e-3), and the training metadata. The shipped file's
SHA-256 is pinned in ``fakeprobe/weights/SHA256SUMS`` and checked on every load: a corrupt or replaced
file is refused. ``--weights forensic=FILE`` loads another file written by :func:`export`
(its SHA-256 becomes part of the feature set's config, so a cache never mixes two encoders
under one name).

Two runtimes give the same features. ONNX Runtime (:mod:`.onnx_runtime`, the default where it is
installed) runs ``forensic-v2.onnx``, a copy of the network converted by :func:`export` from the
weights file itself; it imports in a fraction of a second, where TensorFlow takes seconds, so a
one-video ``fakeprobe predict`` never imports TensorFlow. TensorFlow/Keras builds the network
from the weights file and serves when the converted copy is missing, does not match the weights
file, or ``--device gpu`` asks for a GPU that ONNX Runtime (without CUDA) cannot give. The feature
set's config is the same for both, because the converted copy is used only when it is known to
agree: :func:`export` writes it only after both networks embedded the same crops to within
:data:`FEATURE_TOLERANCE`, and records the weights file's SHA-256 and that measurement in it; a
copy that names another weights file or a larger difference is never used. The shipped copy's own
SHA-256 is pinned in ``SHA256SUMS`` and checked on every load, like the weights file's.
``FAKEPROBE_FORENSIC_RUNTIME=keras`` (or ``onnxruntime``) forces one runtime.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import ConfigError, FakeprobeError, MissingDependency, WeightsError
from fakeprobe.extractor.backbones import onnx_runtime
from fakeprobe.extractor.backbones.imagenet import DEFAULT_BATCH_SIZE, TF_HINT, KerasBackbone
from fakeprobe.extractor.base import BACKBONES, Backbone

#: The shipped encoder's weights, inside the ``fakeprobe.weights`` package (its SHA-256 is
#: pinned in that package's ``SHA256SUMS``).
WEIGHTS_FILE = "forensic-v2.npz"
#: The shipped encoder converted for ONNX Runtime (pinned in ``SHA256SUMS`` too); a weights file
#: of one's own has its converted copy beside it, named by :func:`converted_path`.
CONVERTED_FILE = "forensic-v2.onnx"
#: How far a converted network's features may be from the Keras network's, relative to the
#: features' largest magnitude (at least 1): the error float16 weights already bring (see the
#: model card). :func:`export` measures it and refuses a converted copy beyond it.
FEATURE_TOLERANCE = 1e-3
#: Crops :func:`export` compares the two runtimes on when it is given none.
CHECK_CROPS = 64
RUNTIMES = ("auto", "onnxruntime", "keras")
#: The environment variable that forces a runtime (read when a backbone is built).
RUNTIME_ENV = "FAKEPROBE_FORENSIC_RUNTIME"
#: The format of a forensic weights file (bumped when its layout changes).
FORENSIC_FORMAT = 1
#: Keras layer classes a forensic architecture may use: what ``fakeprobe finetune`` builds.
ALLOWED_LAYERS = frozenset({
    "InputLayer", "Normalization", "Functional", "Model", "ZeroPadding2D", "Conv2D",
    "DepthwiseConv2D", "ReLU", "Add", "GlobalAveragePooling2D", "BatchNormalization",
    "Dropout", "Dense", "Activation",
})
EMBEDDING_LAYER = "embedding"


def _text(array: np.ndarray) -> str:
    return bytes(np.asarray(array, np.uint8)).decode("utf-8")


def _layer_classes(config: Any) -> set[str]:
    """The class of the model and of every layer in a Keras model config, nested models
    included (initializers, dtype policies and tensors named inside layers are not layers)."""
    found: set[str] = set()
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str):
            found.add(config["class_name"])
        for layer in (config.get("config") or {}).get("layers", []) \
                if isinstance(config.get("config"), dict) else []:
            found |= _layer_classes(layer)
    return found


def read_weights(path: Path | str, arrays: bool = True) -> tuple[dict, dict, list[np.ndarray]]:
    """``(architecture, metadata, weights)`` of a forensic weights file; no code is run.
    ``arrays=False`` leaves the weights unread (an empty list): what a converted copy needs."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"forensic weights not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            architecture = json.loads(_text(data["architecture"]))
            metadata = json.loads(_text(data["metadata"]))
            count = int(metadata["weights"]) if arrays else 0
            weights = [np.asarray(data[f"w{k:04d}"], np.float32) for k in range(count)]
            for key in ("input_size", "crop_margin", "embedding_dim"):
                float(metadata[key])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a forensic weights file ({exc})") from None
    if metadata.get("format") != FORENSIC_FORMAT:
        raise WeightsError(f"{path}: forensic weights format {metadata.get('format')!r}, this "
                           f"fakeprobe reads format {FORENSIC_FORMAT}")
    unknown = _layer_classes(architecture) - ALLOWED_LAYERS
    if unknown:
        raise WeightsError(f"{path}: the architecture uses layers fakeprobe does not build "
                           f"({', '.join(sorted(unknown))}); refused")
    return architecture, metadata, weights


def export(keras_path: Path | str, out_path: Path | str, extra: dict | None = None,
           check_crops: np.ndarray | None = None) -> str:
    """Write the forensic weights file of a ``fakeprobe finetune`` model, and its copy for ONNX
    Runtime beside it (:func:`convert_weights`, checked on ``check_crops``); the weights
    file's SHA-256.

    The network is stored without its optimizer, weights in float16; ``extra`` is added to the
    metadata (e.g. the training protocol's measured numbers).
    """
    import keras

    from fakeprobe.extractor.backbones.finetuned import read_metadata
    from fakeprobe.fileio import atomic_path

    meta = read_metadata(keras_path)
    model = keras.models.load_model(keras_path, compile=False, safe_mode=True)
    weights = model.get_weights()
    metadata = {
        "format": FORENSIC_FORMAT, "weights": len(weights), "base": meta["base"],
        "input_size": meta["input_size"], "crop_margin": meta["crop_margin"],
        "embedding_layer": EMBEDDING_LAYER, "embedding_dim": meta["embedding_dim"],
        "dtype": "float16", "trained": {k: meta.get(k) for k in (
            "config", "epochs_run", "best_epoch", "monitor", "best_value", "train_items",
            "val_items", "val_groups", "training_cache", "seed", "versions", "saved")},
        **(extra or {}),
    }
    arrays = {f"w{k:04d}": np.asarray(w, np.float16) for k, w in enumerate(weights)}
    arrays["architecture"] = np.frombuffer(model.to_json().encode("utf-8"), np.uint8)
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    digest = sha256_file(out_path)
    convert_weights(out_path, check_crops=check_crops)
    return digest


def converted_path(weights_path: Path | str) -> Path:
    """Where the ONNX Runtime copy of a forensic weights file lives: beside it, ``.onnx``."""
    return Path(weights_path).with_suffix(".onnx")


def build_keras(architecture: dict, weights: list[np.ndarray], source: Path | str) -> Any:
    """The Keras network of a forensic weights file, up to its ``embedding`` layer."""
    import keras

    try:
        full = keras.models.model_from_json(json.dumps(architecture))
        full.set_weights(weights)
        embedding = full.get_layer(EMBEDDING_LAYER).output
    except Exception as exc:  # Keras raises many types for a wrong file
        raise WeightsError(f"cannot build the forensic encoder from {source}: {exc}") from exc
    return keras.Model(full.inputs, embedding, name="forensic_embedding")


def synthetic_crops(size: int, n: int = CHECK_CROPS, seed: int = 0) -> np.ndarray:
    """``n`` deterministic ``size`` px RGB crops for comparing two runtimes when no real ones
    are at hand: half uniform noise, half smooth random images (noise at 1/8 scale, enlarged)."""
    import cv2

    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, size, size, 3), np.uint8)
    small = rng.integers(0, 256, (n, max(2, size // 8), max(2, size // 8), 3), np.uint8)
    for k in range(n // 2, n):
        crops[k] = cv2.resize(small[k], (size, size), interpolation=cv2.INTER_CUBIC)
    return crops


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """How far features ``a`` are from the reference ``b``: the largest absolute difference,
    the reference's largest magnitude and whether :data:`FEATURE_TOLERANCE` holds."""
    difference = float(np.abs(np.asarray(a, np.float64) - b).max()) if len(b) else 0.0
    scale = float(np.abs(b).max()) if len(b) else 0.0
    return {"crops": int(len(b)), "max_abs_difference": difference, "feature_scale": scale,
            "tolerance": FEATURE_TOLERANCE,
            "within": difference <= FEATURE_TOLERANCE * max(1.0, scale)}


def convert_weights(weights_path: Path | str, check_crops: np.ndarray | None = None,
                    out_path: Path | str | None = None) -> dict:
    """Write the ONNX Runtime copy of a forensic weights file (default: beside it, see
    :func:`converted_path`); the metadata stored in it.

    Both networks embed ``check_crops`` (default: :func:`synthetic_crops`) first; a copy whose
    features differ from the Keras network's by more than :data:`FEATURE_TOLERANCE` is not
    written (:class:`WeightsError`). The copy records the weights file's name and SHA-256 and
    that measurement, which the backbone checks before using it. Needs TensorFlow, tf2onnx,
    onnx and onnxruntime.
    """
    from fakeprobe.core.provenance import NETWORK_LIBRARIES, library_versions
    from fakeprobe.core.tf import import_tensorflow
    from fakeprobe.fileio import atomic_path

    weights_path = Path(weights_path)
    architecture, metadata, arrays = read_weights(weights_path)
    size = int(metadata["input_size"])
    tf = import_tensorflow()
    with tf.device("/CPU:0"):
        model = build_keras(architecture, arrays, weights_path)
        crops = synthetic_crops(size) if check_crops is None else np.asarray(check_crops)
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ConfigError(f"check crops must be (n, {size}, {size}, 3) uint8, got "
                              f"{crops.shape} {crops.dtype}")
        reference = np.concatenate([
            model(tf.cast(crops[i:i + DEFAULT_BATCH_SIZE], tf.float32), training=False).numpy()
            for i in range(0, len(crops), DEFAULT_BATCH_SIZE)]) if len(crops) else np.zeros(0)
        proto = onnx_runtime.convert(model, size)
    description = {
        "format": FORENSIC_FORMAT, "source": weights_path.name,
        "source_sha256": sha256_file(weights_path), "input_size": size,
        "embedding_dim": int(metadata["embedding_dim"]), "base": metadata.get("base"),
        "versions": library_versions({**NETWORK_LIBRARIES, **{
            name: (name,) for name in ("tf2onnx", "onnx", "onnxruntime")}}),
    }
    network = onnx_runtime.OnnxNetwork(onnx_runtime.serialize(proto, description),
                                       str(weights_path), providers=["CPUExecutionProvider"],
                                       batch_size=DEFAULT_BATCH_SIZE)
    measured = agreement(network.embed(crops), reference)
    measured["check_crops"] = "synthetic" if check_crops is None else "given"
    if not measured["within"]:
        raise WeightsError(f"the ONNX copy of {weights_path} gives features up to "
                           f"{measured['max_abs_difference']:.3g} away from the Keras network's "
                           f"(tolerance {FEATURE_TOLERANCE} x "
                           f"{max(1.0, measured['feature_scale']):.3g}); not written")
    description["agreement"] = measured
    out_path = Path(out_path) if out_path is not None else converted_path(weights_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(onnx_runtime.serialize(proto, description))
    return description


class ForensicBackbone(Backbone):
    """The ``embedding`` layer of fakeprobe's forensic encoder on uint8 RGB crops.

    ``runtime``: ``auto`` (ONNX Runtime when a converted copy that matches the weights file is
    at hand and can honour ``device``, else Keras), ``onnxruntime`` (that copy or an error) or
    ``keras``; ``None`` reads :data:`RUNTIME_ENV` (default ``auto``). :attr:`runtime` says which
    one serves; the feature set's :meth:`config` is the same for both (see the module doc).
    """

    name = "forensic"

    def __init__(self, weights: str | Path | None = None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, runtime: str | None = None) -> None:
        from fakeprobe.core.tf import check_device
        from fakeprobe.weights import pinned_sha256, verified

        runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
        if runtime not in RUNTIMES:
            raise FakeprobeError(f"unknown forensic runtime {runtime!r} ({RUNTIME_ENV}?); "
                                 f"choose one of: {', '.join(RUNTIMES)}")
        check_device(device)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        shipped = weights is None  # hashed once, by the check against its pin
        path = verified(WEIGHTS_FILE, "the shipped forensic encoder") if shipped \
            else Path(weights)
        architecture, self.metadata, _ = read_weights(path, arrays=False)
        digest = pinned_sha256(WEIGHTS_FILE) if shipped else sha256_file(path)
        self.weights_path = path
        self.weights_sha256 = digest
        self.dim = int(self.metadata["embedding_dim"])
        self.crop = CropSpec(size=int(self.metadata["input_size"]),
                             margin=float(self.metadata["crop_margin"]))
        self._net: Any = None
        if runtime != "keras":
            self._net = self._converted(shipped, device, required=runtime == "onnxruntime")
        if self._net is not None:
            self.runtime = "onnxruntime"
        else:
            if importlib.util.find_spec("tensorflow") is None:
                raise MissingDependency(f"the forensic encoder needs onnxruntime (with its "
                                        f"converted copy) or TensorFlow ({TF_HINT})")
            self.runtime = "keras"
            self._net = _KerasNetwork(self, build=lambda: build_keras(
                architecture, read_weights(path)[2], path), device=device)

    def _converted(self, shipped: bool, device: str, required: bool) -> Any:
        """The converted copy in an ONNX Runtime session, or ``None`` when it cannot serve
        (an error instead when ``required``): ONNX Runtime missing, no copy, a copy of other
        weights or beyond tolerance, or a device it cannot honour. A shipped copy that fails
        its pinned SHA-256 is an error either way."""
        from fakeprobe.core.checksums import read_verified
        from fakeprobe.weights import pinned_sha256, weights_dir

        def unusable(reason: str) -> None:
            if required:
                raise WeightsError(f"the forensic encoder cannot run on ONNX Runtime: {reason}")
            return None

        if not onnx_runtime.available():
            return unusable(f"onnxruntime is not installed ({onnx_runtime.ORT_HINT})")
        path = weights_dir() / CONVERTED_FILE if shipped else converted_path(self.weights_path)
        if not path.is_file():
            return unusable(f"no converted copy at {path} (fakeprobe.extractor.backbones."
                            f"forensic.convert_weights writes one)")
        providers = onnx_runtime.providers_for(device)
        if providers is None:
            return unusable(f"--device {device}: this onnxruntime has no CUDA")
        if shipped:
            data = read_verified(path, pinned_sha256(CONVERTED_FILE), "shipped forensic ONNX")
        else:
            data = path.read_bytes()
        network = onnx_runtime.OnnxNetwork(data, str(path), providers=providers,
                                           batch_size=self.batch_size)
        meta = network.metadata
        measured = meta.get("agreement") if isinstance(meta.get("agreement"), dict) else {}
        problem = (
            f"it was converted from weights with SHA-256 {meta.get('source_sha256')}, not "
            f"{self.weights_sha256}" if meta.get("source_sha256") != self.weights_sha256 else
            f"its input is {network.size} px and its output {network.dim}-d, the weights "
            f"file's {self.crop.size} px and {self.dim}-d"
            if (network.size, network.dim) != (self.crop.size, self.dim) else
            "it records no agreement within tolerance with the Keras network"
            if not (measured.get("within") is True and _number(measured.get(
                "max_abs_difference")) <= FEATURE_TOLERANCE * max(1.0, _number(
                    measured.get("feature_scale")))) else None)
        if problem is None:
            return network
        if shipped:
            raise WeightsError(f"the shipped {path.name} does not match {WEIGHTS_FILE}: "
                               f"{problem}; reinstall fakeprobe")
        if not required:
            warnings.warn(f"{path} is not used, the Keras network serves instead: {problem}; "
                          f"write it again with convert_weights", stacklevel=3)
        return unusable(f"{path}: {problem}")

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self._net.embed(self.check_crops(crops))

    def config(self) -> dict:
        # "framework" names how the network is defined (the Keras architecture in the weights
        # file), not the runtime that executes it: both runtimes give the same feature set.
        return {**super().config(), "framework": "keras", "weights": self.weights_path.name,
                "weights_sha256": self.weights_sha256, "base": self.metadata.get("base"),
                "layer": EMBEDDING_LAYER}


def _number(value: Any) -> float:
    """``value`` as a float, or infinity when it is not a number (a check then fails)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("inf")
    return number if number == number else float("inf")


class _KerasNetwork(KerasBackbone):
    """The Keras path: the network built by ``build()`` on ``device``, run by TensorFlow."""

    def __init__(self, owner: ForensicBackbone, build: Any, device: str) -> None:
        super().__init__(device, owner.batch_size)
        self.name, self.dim, self.crop = owner.name, owner.dim, owner.crop
        with self._tf.device(self.device):
            self._model = build()
        self._compile()

    def _preprocess(self, x: Any) -> Any:
        return x  # the network normalises its 0..255 RGB input itself


@BACKBONES.register(
    "forensic",
    requires=(),  # ONNX Runtime (a core dependency) or TensorFlow: checked when built
    hint=f"{onnx_runtime.ORT_HINT} or {TF_HINT}",
    description="fakeprobe's forensic face encoder (EfficientNet-Lite0 trained on DFDC faces "
                "and self-blends), shipped inside the package; 128-d",
)
def create_forensic(device: str = "auto", weights: str | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, runtime: str | None = None,
                    **_) -> Backbone:
    return ForensicBackbone(weights, device=device, batch_size=batch_size, runtime=runtime)
