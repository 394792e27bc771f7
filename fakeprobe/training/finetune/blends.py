"""Self-blends drawn anew at every training step ("fresh blends").

A cache made with ``extract --self-blend`` stores one pseudo-fake twin per real item, blended
once with one draw of :class:`~fakeprobe.synth.blend.BlendConfig`. Trained on those alone, a
network can learn the few draws it was shown. With ``FinetuneConfig.fresh_blends`` every time a
twin's crop is drawn for a training batch it is replaced by a new self-blend of its source real
crop, with new parameters (as self-blended images are trained: Shiohara & Yamasaki, CVPR 2022).
Validation keeps the stored twins, so epochs stay comparable.

The stored crops are aligned on the ArcFace template, so the five landmarks of a crop are the
template's points in crop coordinates (:func:`~fakeprobe.core.geometry.template_for`). Each draw
moves them by a small random similarity (the mask outline then shifts, turns and scales with
them) and picks the hull or the ellipse mask, so the blend boundary is not always in one place.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fakeprobe.core.geometry import CropSpec, template_for
from fakeprobe.datasets import SELF_BLEND_SUFFIX
from fakeprobe.synth.blend import MASK_KINDS, BlendConfig, draw_params, face_size, self_blend

#: Largest random move of the crop's landmarks per draw: shift (fraction of the face size),
#: rotation (degrees) and scale (relative).
LANDMARK_SHIFT = 0.03
LANDMARK_TURN = 5.0
LANDMARK_SCALE = 0.05


def blend_sources(ids: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Per crop row, the row of its source real crop when the row is a self-blend twin whose
    source item is loaded too, else -1.

    ``ids`` are per item, ``item`` per row (as in a ``CropSet``). A twin's k-th row is paired
    with its source's k-th row (the same frame: twins are extracted from their source's
    frames), cycling when the counts differ.
    """
    ids = np.asarray(ids).astype(str)
    item = np.asarray(item)
    rows_of: dict[int, np.ndarray] = {}
    order = np.argsort(item, kind="stable")
    bounds = np.flatnonzero(np.diff(item[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows):
            rows_of[int(item[rows[0]])] = rows
    position = {name: k for k, name in enumerate(ids)}
    source = np.full(len(item), -1, np.int64)
    for k, name in enumerate(ids):
        if not name.endswith(SELF_BLEND_SUFFIX) or k not in rows_of:
            continue
        real = position.get(name[:-len(SELF_BLEND_SUFFIX)])
        if real is None or real not in rows_of:
            continue
        twin_rows, real_rows = rows_of[k], rows_of[real]
        source[twin_rows] = real_rows[np.arange(len(twin_rows)) % len(real_rows)]
    return source


def _moved_landmarks(marks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = face_size(marks)
    centre = marks.mean(axis=0)
    angle = np.deg2rad(rng.uniform(-LANDMARK_TURN, LANDMARK_TURN))
    scale = 1.0 + rng.uniform(-LANDMARK_SCALE, LANDMARK_SCALE)
    turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = rng.uniform(-LANDMARK_SHIFT, LANDMARK_SHIFT, size=2) * size
    return (marks - centre) @ turn.T + centre + shift


def fresh_blend(crop_rgb: np.ndarray, spec: CropSpec, rng: np.random.Generator,
                config: BlendConfig | None = None) -> np.ndarray:
    """A new self-blended pseudo-fake of one aligned ``(S, S, 3)`` uint8 RGB crop."""
    config = config or BlendConfig()
    marks = _moved_landmarks(template_for(spec), rng)
    kind = MASK_KINDS[int(rng.integers(len(MASK_KINDS)))]
    params = dataclasses.replace(draw_params(config, rng), mask=kind)
    out, _ = self_blend(np.ascontiguousarray(crop_rgb[..., ::-1]), marks, params)
    return out[..., ::-1]
