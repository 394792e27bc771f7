"""``finetuned``: the embedding layer of a network trained by ``fakeprobe finetune``.

A fine-tuned model is one ``.keras`` file (see :mod:`fakeprobe.training.finetune`): an ImageNet
base (MobileNetV2 or EfficientNet-Lite0) with its input normalisation inside, then global pool ->
BatchNorm -> Dropout -> ``Dense(embedding, relu)`` -> Dropout -> ``Dense(1, sigmoid)``. Its
provenance travels inside the archive as :data:`METADATA_NAME` (plain JSON, read without
loading the network): base, input size, crop margin, the training cache's fingerprint, epochs,
validation metrics per epoch, seed and library versions.

This backbone outputs the ``embedding`` layer (not the fake score), so the cached features feed
the classical heads like any other feature set::

    fakeprobe extract DATA --out CACHE.h5 -b finetuned --weights finetuned=NET.keras

The feature set is named ``finetuned``; its stored config holds the SHA-256 of the ``.keras``
file, so a cache refuses features of another fine-tuned network under the same name (use
another ``--out``). The crop geometry (input size, margin) comes from the model's metadata; on a
cache made with ``--keep-crops`` large enough, the extractor cuts the crops from the stored ones
without decoding any video.

Loading uses Keras's ``safe_mode`` (no Lambda layers, no arbitrary code), and the metadata is
checked first: a ``.keras`` file that fakeprobe did not write is refused.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.backbones.imagenet import DEFAULT_BATCH_SIZE, TF_HINT, KerasBackbone
from fakeprobe.extractor.base import BACKBONES, Backbone

#: The provenance file inside a fine-tuned ``.keras`` archive.
METADATA_NAME = "fakeprobe.json"
#: The format of that file; bumped when its meaning changes.
FINETUNED_FORMAT = 1
#: Names of the layers the backbone and the trainer agree on.
EMBEDDING_LAYER = "embedding"
SCORE_LAYER = "score"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The provenance stored inside a fine-tuned ``.keras`` file (no network is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"fine-tuned model not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_NAME not in archive.namelist():
                raise WeightsError(f"{path} holds no {METADATA_NAME}: not a model written by "
                                   "`fakeprobe finetune`")
            meta = json.loads(archive.read(METADATA_NAME).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable .keras archive ({exc})") from None
    if meta.get("format") != FINETUNED_FORMAT:
        raise WeightsError(f"{path}: fine-tuned model format {meta.get('format')!r}, this "
                           f"fakeprobe reads format {FINETUNED_FORMAT}")
    return meta


class FinetunedBackbone(KerasBackbone):
    """The ``embedding`` layer of a ``fakeprobe finetune`` model on uint8 RGB crops."""

    name = "finetuned"

    def __init__(self, weights: str | Path | None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if weights is None:
            raise WeightsError("backbone 'finetuned' needs the model file: --weights "
                               "finetuned=NET.keras (written by `fakeprobe finetune`)")
        self.weights_path = Path(weights)
        self.metadata = read_metadata(self.weights_path)
        super().__init__(device, batch_size)
        import keras

        self.weights_sha256 = sha256_file(self.weights_path)
        self.dim = int(self.metadata["embedding_dim"])
        self.crop = CropSpec(size=int(self.metadata["input_size"]),
                             margin=float(self.metadata["crop_margin"]))
        with self._tf.device(self.device):
            try:
                full = keras.models.load_model(self.weights_path, compile=False, safe_mode=True)
                embedding = full.get_layer(EMBEDDING_LAYER).output
            except Exception as exc:  # Keras raises many types for a wrong archive
                raise WeightsError(f"cannot load {self.weights_path}: {exc}") from exc
            self._model = keras.Model(full.inputs, embedding, name="finetuned_embedding")
        self._compile()

    def _preprocess(self, x: Any) -> Any:
        return x  # the model normalises its 0..255 RGB input itself

    def config(self) -> dict:
        meta = self.metadata
        return {**super().config(), "weights": self.weights_path.name,
                "weights_sha256": self.weights_sha256, "base": meta.get("base"),
                "layer": EMBEDDING_LAYER,
                "trained_on": (meta.get("training_cache") or {}).get("sha256")}


@BACKBONES.register(
    "finetuned",
    requires=("tensorflow",),
    hint=TF_HINT,
    description="embedding of a network from `fakeprobe finetune`; needs --weights "
                "finetuned=NET.keras",
)
def create_finetuned(device: str = "auto", weights: str | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, **_) -> Backbone:
    return FinetunedBackbone(weights, device=device, batch_size=batch_size)
