"""Media items, the discovery result and the helpers every layout shares (labels, ids,
listings read with a size limit)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from fakeprobe.core.schema import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from fakeprobe.errors import ConfigError


#: Metadata and manifest files larger than this are refused (the largest DFDC part's
#: metadata.json is about 1 MB; a manifest of a million rows about 100 MB).
MAX_LISTING_BYTES = 256 * 1024**2

REAL, FAKE = "real", "fake"
_LABEL_WORDS = {
    "real": REAL, "0": REAL, "original": REAL, "pristine": REAL,
    "fake": FAKE, "1": FAKE, "manipulated": FAKE, "deepfake": FAKE,
}
_FFPP_ROOTS = ("original_sequences", "manipulated_sequences")
#: The ``method`` of a pseudo-fake made from a real item by self-blending (``fakeprobe synth``,
#: ``extract --self-blend``): labelled fake, grouped with its source, for training only.
SELF_BLEND_METHOD = "self_blend"


@dataclass(frozen=True)
class MediaItem:
    """One video, image or folder of frames, with what the layout says about it."""

    id: str
    path: Path
    kind: str  # "video", "image" or "frames"
    label: str | None = None  # "real", "fake" or None (unlabelled)
    group: str = ""
    dataset: str = ""
    method: str = ""
    #: For a pseudo-fake made on the fly (``extract --self-blend``): the id of its source real,
    #: whose file it reads and blends.
    blend_of: str = ""

    @property
    def exists(self) -> bool:
        return self.path.exists()


#: What ``extract --self-blend`` appends to a real item's id to name its pseudo-fake.
SELF_BLEND_SUFFIX = "#self_blend"


def self_blend_twin(item: MediaItem) -> MediaItem:
    """The pseudo-fake of a real item: same file, label fake, method ``self_blend``, in the
    real's group (so a split never separates them)."""
    return replace(item, id=item.id + SELF_BLEND_SUFFIX, label=FAKE, method=SELF_BLEND_METHOD,
                   group=item.group or item.id, blend_of=item.id)


def with_self_blends(found: Discovery) -> Discovery:
    """``found`` with the pseudo-fake twin of every real video, image or frame folder after it."""
    items = []
    for item in found.items:
        items.append(item)
        if item.label == REAL and not item.blend_of:
            items.append(self_blend_twin(item))
    return Discovery(items, list(found.problems))


@dataclass
class Discovery:
    """What was found: items in a stable order, and one line per problem met on the way.

    Listed but absent files are items (see :attr:`missing`), not problems: the extractor records
    them in the cache as ``missing`` and takes them once they appear."""

    items: list[MediaItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[MediaItem]:
        return [item for item in self.items if not item.exists]


def parse_label(value: str | None) -> str | None:
    """``real``/``fake`` from the usual spellings; None for an empty value."""
    if value is None or not str(value).strip():
        return None
    label = _LABEL_WORDS.get(str(value).strip().lower())
    if label is None:
        raise ConfigError(f"unknown label {_short(value)} (use real or fake)")
    return label


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile listing may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_text(text: str) -> str:
    """``text`` with the bytes of a file name that is not valid UTF-8 (which Python keeps as
    lone surrogates) written as ``\\xff`` escapes: the same on every run, printable, and
    storable as UTF-8 in the cache."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _item_id(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; None for a path the system cannot even look up (a NUL byte,
    a name too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return None


def _read_listing(path: Path) -> bytes:
    """The bytes of a metadata file or manifest, refusing absurd sizes."""
    size = path.stat().st_size
    if size > MAX_LISTING_BYTES:
        raise ConfigError(f"{size / 1e6:.0f} MB, over the {MAX_LISTING_BYTES / 1e6:.0f} MB a "
                          "listing may have")
    return path.read_bytes()


def _is_media(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def _walk(root: Path, frame_folders: bool) -> Iterable[Path]:
    """Media files under ``root`` in sorted order; leaf folders of images when ``frame_folders``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        if "metadata.json" in filenames:
            yield folder / "metadata.json"
        files = sorted(folder / name for name in filenames)
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if frame_folders and images and not dirnames and folder != root:
            yield folder
            continue
        yield from (p for p in files if _is_media(p))
