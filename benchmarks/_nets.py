"""What the benchmarks that fine-tune a net share: its outputs on crops, and per-item means."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def net_outputs(path: Path, crops: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, P(fake)) of every crop through a fine-tuned ``.keras`` file."""
    from fakeprobe.core.tf import import_tensorflow
    from fakeprobe.extractor.backbones.finetuned import EMBEDDING_LAYER, SCORE_LAYER

    tf = import_tensorflow()
    net = tf.keras.models.load_model(path, compile=False, safe_mode=True)
    both = tf.keras.Model(net.inputs, [net.get_layer(EMBEDDING_LAYER).output,
                                       net.get_layer(SCORE_LAYER).output])
    emb, score = [], []
    for i in range(0, len(crops), batch):
        e, s = both(crops[i : i + batch].astype(np.float32), training=False)
        emb.append(np.asarray(e))
        score.append(np.asarray(s).reshape(-1))
    return np.concatenate(emb), np.concatenate(score)


def item_mean(values: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Per item, the mean of its rows' ``values`` (NaN for an item with no row)."""
    sums = np.bincount(item, weights=values, minlength=n_items)
    counts = np.bincount(item, minlength=n_items)
    with np.errstate(invalid="ignore"):
        return sums / counts
