"""Face crops of cached rows: the stored crops where they serve, else re-read and re-aligned.

Every part of fakeprobe that needs the faces of rows already in a cache (new feature sets cut
from the stored crops, explanations, report thumbnails, fine-tuning) asks :func:`row_crops`.
For each row it gives the crop at every wanted geometry:

1. **stored**: the cache's crops (``extract --keep-crops N``, geometry
   ``CropSpec(N, CONTEXT_MARGIN)``) served as they are when the geometry is the stored one, cut
   from them by :func:`~fakeprobe.extractor.align.recrop` when the wanted field of view lies
   inside the stored one with no upsampling (or upsampling is allowed). A stored crop of zeros
   (a row whose crop was never written) does not serve.
2. **media**: otherwise the item's frames are re-read from its path at the cached frame indices
   (sampled with the cache's extractor config) and aligned with the cached landmarks, exactly as
   extraction aligned them. A self-blended pseudo-fake exists only in its stored crops: its
   path holds the real footage it was made from, so it is never re-read.

A row that gets no crop is not an exception: its reason is recorded (missing media, a frame that
no longer decodes, no face in the row) and its crop left as zeros; ``strict=True`` turns any
such row into one :class:`CropError` that lists the reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.errors import ConfigError, FakeprobeError, MediaError
from fakeprobe.extractor.align import align_face, can_recrop, recrop
from fakeprobe.features.cache import CacheReader

#: Where a row's crop came from (``RowCrops.source``); ``""``: no crop (see ``reasons``).
STORED, MEDIA = "stored", "media"


class CropError(FakeprobeError):
    """Some rows got no crop (``strict=True``); ``reasons`` maps row positions to why."""

    def __init__(self, message: str, reasons: dict[int, str]) -> None:
        super().__init__(message)
        self.reasons = reasons


@dataclass
class RowCrops:
    """Crops of ``rows`` (cache row indices, in the order asked) at each wanted geometry.

    ``crops[spec]`` is ``(len(rows), S, S, 3)`` uint8 RGB, zeros where a row got no crop;
    ``source[k]`` is :data:`STORED`, :data:`MEDIA` or ``""``; ``reasons`` maps the position of
    every row without a crop to why.
    """

    rows: np.ndarray
    crops: dict[CropSpec, np.ndarray]
    source: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)

    def __getitem__(self, spec: CropSpec) -> np.ndarray:
        return self.crops[spec]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> np.ndarray:
        """Per row: it got a crop."""
        return self.source != ""

    def count(self, source: str) -> int:
        return int(np.count_nonzero(self.source == source))


def stored_spec(reader: CacheReader) -> CropSpec | None:
    """Geometry of a cache's stored crops, or ``None`` when it stores none."""
    size = reader.config.keep_crops
    return CropSpec(int(size), CONTEXT_MARGIN) if reader.has_crops and size else None


def serves(stored: CropSpec | None, wanted: CropSpec, upsample: bool = False) -> bool:
    """True when crops of geometry ``wanted`` can be made from stored crops of ``stored``: the
    same geometry, or one cut from it without loss (or, with ``upsample``, any geometry whose
    field of view lies inside the stored one)."""
    if stored is None:
        return False
    if wanted == stored or can_recrop(stored, wanted):
        return True
    return upsample and wanted.margin <= stored.margin


def media_path(path: str, cache_path: Path) -> Path:
    """An item's path as recorded, or, when relative and not found from here, relative to the
    cache's folder."""
    media = Path(path)
    if not media.is_absolute() and not media.exists():
        beside = Path(cache_path).parent / media
        if beside.exists():
            return beside
    return media


def row_crops(reader: CacheReader, rows: slice | Sequence[int] | np.ndarray,
              specs: CropSpec | Iterable[CropSpec], *, media: bool = True,
              upsample: bool = False, strict: bool = False) -> RowCrops:
    """The face crops of cached ``rows`` at every geometry of ``specs`` (see the module doc).

    ``media=False``: never re-read an item (a row without a usable stored crop gets none).
    ``upsample``: stored crops may be scaled up to a larger wanted geometry instead of the media
    being re-read. ``strict``: raise :class:`CropError` when any row gets no crop.
    """
    wanted = [specs] if isinstance(specs, CropSpec) else list(dict.fromkeys(specs))
    if not wanted:
        raise ConfigError("row_crops needs at least one crop geometry")
    if isinstance(rows, slice):
        rows = np.arange(*rows.indices(reader.n_rows))
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) and (rows.min() < 0 or rows.max() >= reader.n_rows):
        raise IndexError(f"{reader.path}: rows outside 0..{reader.n_rows - 1}")
    n = len(rows)
    out = {spec: np.zeros((n, spec.size, spec.size, 3), np.uint8) for spec in wanted}
    source = np.full(n, "", dtype=object)
    reasons: dict[int, str] = {}
    result = RowCrops(rows, out, source, reasons)
    if not n:
        return result
    item_of = reader.frames(("video",))["video"][rows].astype(np.int64)

    stored = stored_spec(reader)
    if all(serves(stored, spec, upsample) for spec in wanted):
        _from_store(reader, rows, item_of, stored, result)
    todo = np.flatnonzero(source == "")
    if len(todo) and media:
        _from_media(reader, rows, item_of, todo, result)
    elif len(todo):
        why = ("no stored crop of this row" if stored is not None else
               f"{reader.path} stores no face crops (extract with --keep-crops N)")
        if stored is not None and not all(serves(stored, s, upsample) for s in wanted):
            why = (f"the stored {stored.size} px crops cannot give "
                   + ", ".join(f"{s.size} px (margin {s.margin:g})" for s in wanted))
        reasons.update({int(k): why for k in todo})
    if strict and reasons:
        first = list(dict.fromkeys(reasons.values()))
        raise CropError(f"{len(reasons)} of {n} face crops could not be made: "
                        + "; ".join(first[:3]) + ("; ..." if len(first) > 3 else ""), reasons)
    return result


def _from_store(reader: CacheReader, rows: np.ndarray, item_of: np.ndarray, stored: CropSpec,
                result: RowCrops) -> None:
    """Fill the rows whose stored crop holds a face, one read per item (its rows' span)."""
    for item in np.unique(item_of):
        positions = np.flatnonzero(item_of == item)
        wanted = rows[positions]
        first = int(wanted.min())
        block = reader.crops(slice(first, int(wanted.max()) + 1))[wanted - first]
        written = block.reshape(len(block), -1).any(axis=1)
        if not written.any():
            continue
        block, positions = block[written], positions[written]
        for spec, crops in result.crops.items():
            crops[positions] = block if spec == stored else recrop(block, stored, spec)
        result.source[positions] = STORED


def _from_media(reader: CacheReader, rows: np.ndarray, item_of: np.ndarray, todo: np.ndarray,
                result: RowCrops) -> None:
    """Fill rows ``todo`` by re-reading their items' frames and aligning the cached landmarks."""
    # the module, not the name: a test (or a caller) may substitute the reader
    from fakeprobe.extractor import frames as frames_module

    videos = reader.videos()
    columns = reader.frames(("frame_index", "landmarks", "has_face"))
    config = reader.config
    for item in np.unique(item_of[todo]):
        positions = todo[item_of[todo] == item]
        path = media_path(str(videos["path"][item]), reader.path)
        if videos["method"][item] == SELF_BLEND_METHOD:
            why = (f"{videos['id'][item]}: a self-blended item cannot be re-read from "
                   f"{path} (its faces exist only in stored crops)")
            result.reasons.update({int(k): why for k in positions})
            continue
        marks = columns["landmarks"][rows[positions]]
        face = columns["has_face"][rows[positions]] & np.isfinite(marks).reshape(
            len(positions), -1).all(axis=1)
        for k in positions[~face]:
            result.reasons[int(k)] = f"{videos['id'][item]}: no face in row {int(rows[k])}"
        positions = positions[face]
        if not len(positions):
            continue
        frame_index = columns["frame_index"][rows[positions]]
        try:
            _, images = frames_module.read_media(
                path, str(videos["kind"][item]), np.unique(frame_index), count=config.frames,
                fps=config.fps, max_frames=config.max_frames, max_pixels=config.max_pixels)
        except MediaError as exc:
            why = f"{path}: cannot re-read the frames ({exc})"
            result.reasons.update({int(k): why for k in positions})
            continue
        by_index = {frame.index: frame.image for frame in images}
        for k, index in zip(positions, frame_index):
            image = by_index.get(int(index))
            if image is None:
                result.reasons[int(k)] = f"{path}: frame {int(index)} can no longer be decoded"
                continue
            for spec, crops in result.crops.items():
                crops[k] = align_face(image, columns["landmarks"][rows[k]], spec)
            result.source[k] = MEDIA
