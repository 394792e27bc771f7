"""The extractor's configuration: one frozen dataclass, stored in every cache and model file."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from fakeprobe.core.augment import canonical as canonical_augment
from fakeprobe.errors import ConfigError

#: Frames per video when no rate is given: the DFDC winners sampled 32 evenly spaced frames.
DEFAULT_FRAMES = 32
#: The default feature set: fakeprobe's own forensic encoder, shipped inside the package
#: (``fakeprobe/weights/FORENSIC_CARD.md``). ``benchmarks/forensic_encoder.py`` ranks it first:
#: ROC-AUC 0.84 on DFDC actors it never saw (frozen MobileNetV2 0.69) and 0.61 on the FF++
#: videos with no FF++ item in training (0.50); and it needs no extra wheel.
DEFAULT_BACKBONE = "forensic"
#: Longest side of the copy of a frame the detector sees. YuNet finds the face in every one of the
#: 1,600 sampled frames of the FF++ c40 videos and the 192 of the DFDC ones at 320 px as at 640,
#: in about 40% of the time (``benchmarks/speed.py`` checks the rate and the AUC on both).
DEFAULT_DETECT_SIZE = 320
#: Frames larger than this many pixels are refused (an 8K frame is 33 Mpx).
DEFAULT_MAX_PIXELS = 40_000_000
#: The most frames sampled from one video (``frames`` and ``max_frames``): every frame of 5.5
#: minutes at 30 fps. All the sampled frames of an item are held in memory while its faces are
#: found (about 6 MB each at 1080p; ``frames.MAX_DECODE_BYTES`` refuses an item that would need
#: more than 4 GiB), and each becomes rows in the cache; a typo such as ``--frames 1000000``
#: is refused at once instead of running out of memory or time on the first long video.
MAX_SAMPLED_FRAMES = 10_000
#: Detectors whose face score is not a probability: dlib's HOG-SVM margin has no fixed range
#: (about 0 to 3, and a negative threshold finds more faces). Every other detector's score is a
#: probability, so its ``min_face_score`` must lie between 0 and 1.
UNBOUNDED_SCORE_DETECTORS = frozenset({"dlib-hog"})
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
    "keyframes_only",
    "keep_crops",
    "max_pixels",
    "face_crops",
    "augment",
)


class InvalidConfig(ConfigError):
    """A stored extractor config (in a cache or a model file) with a value out of range or of
    the wrong type. A ``ValueError`` too, so callers that catch that keep working."""


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything that decides what ``fakeprobe extract`` writes.

    ``frames`` evenly spaced frames per video, or, when ``fps`` is set, frames at that rate (at
    most ``max_frames``). ``min_face_score`` of ``None`` means the detector's own default.
    ``keep_crops`` is the side of stored aligned face crops (0 keeps none). ``face_crops``:
    every still image is one face crop (a face-crop data set): the largest detected face, or
    the image itself centred on the face template when none is found; videos are unaffected.
    ``keyframes_only``: each sampled frame of a video is replaced by the key frame nearest it
    (duplicates dropped), and only key frames are decoded: for long videos, whose reference
    frames cost too much to decode. ``augment``: extra rows per face made from transformed
    aligned crops, for training only (the syntax is in :mod:`fakeprobe.core.augment`; stored
    written one way, ``""`` for none). ``backbones`` may
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
    keyframes_only: bool = False
    keep_crops: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    face_crops: bool = False
    augment: str = ""
    backbones: tuple[str, ...] = field(default=(DEFAULT_BACKBONE,))

    def __post_init__(self) -> None:
        for name, low, high in (("frames", 1, MAX_SAMPLED_FRAMES),
                                ("max_frames", 1, MAX_SAMPLED_FRAMES),
                                ("detect_size", 1, 1 << 16), ("max_pixels", 1, 1 << 40)):
            _check_int(name, getattr(self, name), low, high)
        if self.fps is not None and not (_is_number(self.fps) and 0 < self.fps < math.inf):
            raise ConfigError(f"fps must be a positive number, not {self.fps!r}")
        score = self.min_face_score
        if score is not None:
            if not (_is_number(score) and math.isfinite(score)):
                raise ConfigError(f"min_face_score must be a number, not {score!r}")
            if self.detector not in UNBOUNDED_SCORE_DETECTORS and not 0.0 <= score <= 1.0:
                raise ConfigError(f"min_face_score must be between 0 and 1 for {self.detector} "
                                  f"(a probability), not {score!r}")
        if not (_is_number(self.track_iou) and 0.0 <= self.track_iou <= 1.0):
            raise ConfigError(f"track_iou must be between 0 and 1, not {self.track_iou!r}")
        kind = type(self.keyframes_only)
        if not (kind is bool or (kind.__module__ == "numpy"  # numpy's, read from a cache
                                 and kind.__name__ in ("bool", "bool_"))):
            raise ConfigError(f"keyframes_only must be true or false, not "
                              f"{self.keyframes_only!r}")
        object.__setattr__(self, "keyframes_only", bool(self.keyframes_only))
        if not (_is_int(self.keep_crops) and self.keep_crops >= 0):
            raise ConfigError("keep_crops must be 0 (off) or a crop size in pixels")
        if isinstance(self.backbones, (str, bytes)) or not all(
                isinstance(name, str) for name in self.backbones):
            raise ConfigError(f"backbones must be a list of names, not {self.backbones!r}")
        object.__setattr__(self, "backbones", tuple(self.backbones))
        if not isinstance(self.augment, str):
            raise ConfigError(f"augment must be a spec such as 'flip,jpeg:60', not "
                              f"{self.augment!r}")
        object.__setattr__(self, "augment", canonical_augment(self.augment))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backbones"] = list(self.backbones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractorConfig":
        """The config stored as ``data``; :class:`InvalidConfig` for one that is not valid
        (a stored config is input too: a model file may come from anyone)."""
        if not isinstance(data, dict):
            raise InvalidConfig(f"an extractor config must be a JSON object, not "
                                f"{type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            if "backbones" in kwargs:
                kwargs["backbones"] = tuple(kwargs["backbones"])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidConfig(f"invalid extractor config: {exc}") from None

    def row_differences(self, other: "ExtractorConfig") -> dict[str, tuple[Any, Any]]:
        """The row-deciding fields that differ, as ``{field: (self, other)}``."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in ROW_FIELDS
            if getattr(self, name) != getattr(other, name)
        }


def _is_int(value: Any) -> bool:
    """A whole number (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number that is not NaN (numpy's too), not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and value == value)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
