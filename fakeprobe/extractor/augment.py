"""Augmented rows at extraction (``fakeprobe extract --augment``): transformed copies of the
aligned face crops, embedded like the real rows and marked in the cache's ``augment`` column.

Each transform works on one ``(S, S, 3)`` uint8 RGB crop (:func:`apply`). The random part
(``noise``'s draw) comes from a generator seeded by the item id, the row's frame and track and
the row name (:func:`row_seed`), so the same item gives the same rows in any run, on any worker
and in any order. Augmented rows are for training only: the heads' data
(:func:`fakeprobe.classifiers.data.load_frames`) leaves them out unless asked, and the
cross-validation fits on them but never scores them.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, TypeVar

import numpy as np

from fakeprobe.core.augment import AugmentStep, parse_augment

K = TypeVar("K")
#: The crop side the ``blur`` sigma is given for (the ArcFace crop): a 224-px crop is blurred
#: with twice the sigma, so every backbone sees the same blur relative to the face.
BLUR_REFERENCE_SIZE = 112


def flip(crop: np.ndarray) -> np.ndarray:
    """Horizontal mirror."""
    return np.ascontiguousarray(crop[:, ::-1])


def jpeg(crop: np.ndarray, quality: int) -> np.ndarray:
    """The crop after a JPEG round trip at ``quality`` (1-100)."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` pixels at a :data:`BLUR_REFERENCE_SIZE`-px crop."""
    import cv2

    scaled = float(sigma) * crop.shape[0] / BLUR_REFERENCE_SIZE
    return cv2.GaussianBlur(crop, (0, 0), sigmaX=scaled, sigmaY=scaled,
                            borderType=cv2.BORDER_REFLECT_101)


def noise(crop: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of ``std`` grey levels, clipped to 0-255."""
    noisy = crop.astype(np.float32) + rng.normal(0.0, float(std), crop.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def scale(crop: np.ndarray, factor: float) -> np.ndarray:
    """Down-scaled by ``factor`` (area averaging) and back up to its size (bilinear)."""
    import cv2

    height, width = crop.shape[:2]
    small = cv2.resize(crop, (max(1, round(width * factor)), max(1, round(height * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def apply(step: AugmentStep, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``crop`` transformed by ``step`` (a ``(S, S, 3)`` uint8 RGB array, same shape out)."""
    if step.name == "flip":
        return flip(crop)
    if step.name == "jpeg":
        return jpeg(crop, int(step.param))
    if step.name == "blur":
        return blur(crop, step.param)
    if step.name == "noise":
        return noise(crop, step.param, rng)
    if step.name == "scale":
        return scale(crop, step.param)
    raise ValueError(f"unknown augmentation {step.name!r}")


def row_seed(item_id: str, frame_index: int, track: int, row_name: str) -> int:
    """The seed of one augmented row's random draw: the same for the same item, frame, track
    and row name in every run."""
    key = f"{item_id}\0{int(frame_index)}\0{int(track)}\0{row_name}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def _steps_by_row_name(spec: str) -> dict[str, AugmentStep]:
    return {name: step for step in parse_augment(spec) for name in step.row_names()}


def expand_rows(rows, spec: str):
    """``rows`` (:class:`~fakeprobe.features.cache.FrameRows` of new, original rows) followed
    by one augmented copy of every face row per row name of ``spec``, in that order, each
    marked with its row name; and the position in ``rows`` each row was copied from."""
    names = [name for step in parse_augment(spec) for name in step.row_names()]
    originals = np.arange(len(rows))
    faces = np.flatnonzero(rows.has_face)
    source = np.concatenate([originals] + [faces] * len(names)).astype(int)
    marks = np.array([""] * len(rows) + [n for n in names for _ in faces], dtype=object)
    columns = {name: values[source] for name, values in rows.columns().items()}
    columns["augment"] = marks
    return type(rows)(**columns), source


def augment_crops(crops: Mapping[K, np.ndarray], rows, spec: str, item_id: str
                  ) -> dict[K, np.ndarray]:
    """``crops`` (per crop geometry, one per face row of ``rows``, in row order) with the
    crops of augmented rows transformed by their step; original rows' crops are unchanged."""
    marks = rows.columns()["augment"][rows.has_face]
    if not any(marks):
        return dict(crops)
    steps = _steps_by_row_name(spec)
    unknown = sorted({m for m in marks if m and m not in steps})
    if unknown:
        raise ValueError(f"augmented rows {unknown} are not made by the spec {spec!r}")
    frame_index = rows.frame_index[rows.has_face]
    track = rows.track[rows.has_face]
    out = {}
    for key, stack in crops.items():
        stack = np.array(stack, copy=True)
        for k in np.flatnonzero(marks != ""):
            rng = np.random.default_rng(row_seed(item_id, frame_index[k], track[k], marks[k]))
            stack[k] = apply(steps[marks[k]], stack[k], rng)
        out[key] = stack
    return out
