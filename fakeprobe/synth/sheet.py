"""Contact sheets: real face crops beside their self-blended versions, to check blends by eye.

One row per item: the real crop, the pseudo-fake crop, the blend weight (white where the copy
was pasted) and the amplified difference. A good blend shows a face-shaped weight from brows to
chin, a pseudo-fake that looks like a plausible face, and no black border or misplaced patch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import FakeprobeError
from fakeprobe.extractor.align import align_face
from fakeprobe.fileio import write_bytes
from fakeprobe.synth.blend import BlendConfig, self_blend

#: Side of each tile, in pixels.
TILE = 160
#: Gain on the absolute difference so that small colour changes show.
DIFF_GAIN = 4.0
_COLUMNS = ("real", "self-blend", "blend weight", f"|difference| x{DIFF_GAIN:g}")


def _middle_frame(path: Path, kind: str) -> np.ndarray:
    from fakeprobe.extractor.frames import read_media

    _, frames = read_media(path, kind, count=3)
    return frames[len(frames) // 2].image


def sheet_rows(frame_bgr: np.ndarray, landmarks: np.ndarray, params) -> list[np.ndarray]:
    """The four tiles (BGR, ``TILE`` square) of one face: real, blend, weight, difference."""
    spec = CropSpec(TILE, CONTEXT_MARGIN)
    blended, weight = self_blend(frame_bgr, landmarks, params)
    real = cv2.cvtColor(align_face(frame_bgr, landmarks, spec), cv2.COLOR_RGB2BGR)
    fake = cv2.cvtColor(align_face(blended, landmarks, spec), cv2.COLOR_RGB2BGR)
    weight_u8 = np.clip(np.rint(weight * 255.0), 0, 255).astype(np.uint8)
    weight_crop = align_face(cv2.cvtColor(weight_u8, cv2.COLOR_GRAY2BGR), landmarks, spec)
    diff = np.clip(np.abs(fake.astype(np.float32) - real.astype(np.float32)) * DIFF_GAIN, 0,
                   255).astype(np.uint8)
    return [real, fake, weight_crop, diff]


def compose(rows: Sequence[tuple[str, list[np.ndarray]]], path: Path | str) -> Path:
    """Write a grid of tiles with a header and one caption per row, as PNG (atomically)."""
    if not rows:
        raise FakeprobeError("nothing to put on the contact sheet (no face was found)")
    header, caption = 24, 18
    width = TILE * len(_COLUMNS)
    sheet = np.full((header + len(rows) * (TILE + caption), width, 3), 255, np.uint8)
    for k, name in enumerate(_COLUMNS):
        cv2.putText(sheet, name, (k * TILE + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0),
                    1, cv2.LINE_AA)
    for r, (label, tiles) in enumerate(rows):
        top = header + r * (TILE + caption)
        cv2.putText(sheet, label[-60:], (6, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (60, 60, 60), 1, cv2.LINE_AA)
        for k, tile in enumerate(tiles):
            sheet[top + caption : top + caption + TILE, k * TILE : (k + 1) * TILE] = tile
    path = Path(path)
    ok, encoded = cv2.imencode(".png", sheet)
    if not ok:
        raise FakeprobeError(f"cannot encode the contact sheet for {path}")
    return write_bytes(path, encoded.tobytes())


def contact_sheet(results: Sequence, path: Path | str, *, config: BlendConfig, seed: int,
                  detector: str = "yunet", detect_size: int = 640, limit: int = 8) -> Path:
    """A sheet for up to ``limit`` :class:`~fakeprobe.synth.media.SynthResult` items: the
    middle frame of each source, blended with the same parameters ``synth`` used."""
    from fakeprobe.extractor.components import DETECTORS
    from fakeprobe.synth.media import _largest, item_params

    made = DETECTORS.create(detector, device="cpu", detect_size=detect_size)
    rows = []
    for result in list(results)[:limit]:
        source = result.source
        frame = _middle_frame(source.path, source.kind)
        landmarks = _largest(made, frame)
        if landmarks is None:
            continue
        rows.append((source.id, sheet_rows(frame, landmarks,
                                           item_params(config, seed, source.id))))
    return compose(rows, path)
