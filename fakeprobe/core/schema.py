"""Names every layer shares: label codes and item statuses of the cache, and the media suffixes
the extractor reads."""

from __future__ import annotations

from pathlib import Path

#: The cache's label column: 1 fake, 0 real, -1 unlabelled.
LABEL_CODES = {"real": 0, "fake": 1, None: -1}
LABEL_NAMES = {0: "real", 1: "fake", -1: ""}
#: Statuses of items that were read; every other status is a failure with no rows.
READ_STATUSES = ("ok", "no_face")

#: GIFs are read as videos (an animated GIF is a clip; a still one is a one-frame video).
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                            ".gif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def media_kind(path: Path) -> str | None:
    """``video``, ``image``, ``frames`` (a folder of frames) or None for anything else."""
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None
