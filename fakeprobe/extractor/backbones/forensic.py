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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.backbones.imagenet import DEFAULT_BATCH_SIZE, TF_HINT, KerasBackbone
from fakeprobe.extractor.base import BACKBONES, Backbone

#: The shipped encoder's weights, inside the ``fakeprobe.weights`` package (its SHA-256 is
#: pinned in that package's ``SHA256SUMS``).
WEIGHTS_FILE = "forensic-v1.npz"
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


def read_weights(path: Path | str) -> tuple[dict, dict, list[np.ndarray]]:
    """``(architecture, metadata, weights)`` of a forensic weights file; no code is run."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"forensic weights not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            architecture = json.loads(_text(data["architecture"]))
            metadata = json.loads(_text(data["metadata"]))
            count = int(metadata["weights"])
            weights = [np.asarray(data[f"w{k:04d}"], np.float32) for k in range(count)]
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


def export(keras_path: Path | str, out_path: Path | str, extra: dict | None = None) -> str:
    """Write the forensic weights file of a ``fakeprobe finetune`` model; its SHA-256.

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
    return sha256_file(out_path)


class ForensicBackbone(KerasBackbone):
    """The ``embedding`` layer of fakeprobe's forensic encoder on uint8 RGB crops."""

    name = "forensic"

    def __init__(self, weights: str | Path | None = None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        from fakeprobe.weights import pinned_sha256, verified

        shipped = weights is None  # hashed once, by the check against its pin
        path = verified(WEIGHTS_FILE, "the shipped forensic encoder") if shipped \
            else Path(weights)
        architecture, self.metadata, arrays = read_weights(path)
        digest = pinned_sha256(WEIGHTS_FILE) if shipped else sha256_file(path)
        super().__init__(device, batch_size)
        import keras

        self.weights_path = path
        self.weights_sha256 = digest
        self.dim = int(self.metadata["embedding_dim"])
        self.crop = CropSpec(size=int(self.metadata["input_size"]),
                             margin=float(self.metadata["crop_margin"]))
        with self._tf.device(self.device):
            try:
                full = keras.models.model_from_json(json.dumps(architecture))
                full.set_weights(arrays)
                embedding = full.get_layer(EMBEDDING_LAYER).output
            except Exception as exc:  # Keras raises many types for a wrong file
                raise WeightsError(f"cannot build the forensic encoder from {path}: {exc}"
                                   ) from exc
            self._model = keras.Model(full.inputs, embedding, name="forensic_embedding")
        self._compile()

    def _preprocess(self, x: Any) -> Any:
        return x  # the network normalises its 0..255 RGB input itself

    def config(self) -> dict:
        return {**super().config(), "weights": self.weights_path.name,
                "weights_sha256": self.weights_sha256, "base": self.metadata.get("base"),
                "layer": EMBEDDING_LAYER}


@BACKBONES.register(
    "forensic",
    requires=("tensorflow",),
    hint=TF_HINT,
    description="fakeprobe's forensic face encoder (EfficientNet-Lite0 trained on DFDC faces "
                "and self-blends), shipped inside the package; 128-d",
)
def create_forensic(device: str = "auto", weights: str | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return ForensicBackbone(weights, device=device, batch_size=batch_size)
