"""Picking and linking the faces a detector found: the largest face of a frame, the overlap of
two boxes, and face tracks across the sampled frames of a video. Pure functions, no model."""

from __future__ import annotations

from typing import Sequence

from fakeprobe.errors import ConfigError
from fakeprobe.extractor.base import Face

__all__ = ["box_iou", "link_tracks", "select_largest"]


def select_largest(faces: Sequence[Face]) -> list[Face]:
    """The largest face by box area as a one-item list (the first one on a tie), or ``[]``."""
    if not faces:
        return []
    return [max(faces, key=lambda face: face.area)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def link_tracks(
    per_frame_faces: Sequence[Sequence[Face]], iou_threshold: float = 0.3
) -> list[list[int]]:
    """A track id for every face of every frame, parallel to ``per_frame_faces``.

    Frame by frame, each face is linked to the track whose last box (from the last frame where
    that track had a face, however long ago) overlaps it most: pairs with IoU at least
    ``iou_threshold`` are taken greedily, highest IoU first, at most one face per track per frame.
    A face left over starts a new track. Ids are 0, 1, 2... in order of first appearance (in list
    order within a frame). Empty frames are allowed and end no track.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    last_boxes: list[tuple[float, float, float, float]] = []
    result: list[list[int]] = []
    for faces in per_frame_faces:
        pairs = []
        for f, face in enumerate(faces):
            for t, box in enumerate(last_boxes):
                iou = box_iou(face.box, box)
                if iou >= iou_threshold:
                    pairs.append((-iou, t, f))
        pairs.sort()  # highest IoU first; ties go to the older track, then the earlier face
        ids = [-1] * len(faces)
        taken: set[int] = set()
        for _, t, f in pairs:
            if ids[f] < 0 and t not in taken:
                ids[f] = t
                taken.add(t)
        for f, face in enumerate(faces):
            if ids[f] < 0:
                ids[f] = len(last_boxes)
                last_boxes.append(face.box)
            else:
                last_boxes[ids[f]] = face.box
        result.append(ids)
    return result
