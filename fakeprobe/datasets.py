"""Find labelled media and their groups.

Every input is a file, a folder or a CSV manifest. Inside folders each media file is classified
by the nearest structure it sits in, so one call can take a whole data root:

* FaceForensics++ (``original_sequences/<source>/<compression>/videos/ID.mp4`` and
  ``manipulated_sequences/<method>/<compression>/videos/A_B.mp4``): label and method from the
  path; a fake ``A_B`` and the reals ``A`` and ``B`` share one group, across compressions;
* DFDC (a ``metadata.json`` beside the videos): label from the metadata, group from
  ``original`` (a fake and its source real share it); listed but absent files are reported;
* ``real/`` and ``fake/`` folders at any depth: label from the nearest such folder;
* anything else: unlabelled (for prediction).

Ids are paths relative to the folder that holds the input (``data/ffpp/.../183.mp4`` whether the
input was ``data`` or ``data/manifest.csv``), so they do not depend on where the data lives.
An id never holds ``..``: a manifest row pointing outside the manifest's folder gets the path
relative to the deepest folder the two share. Bytes of a file name that are not valid UTF-8 are
written as ``\\xff`` escapes in ids (see :func:`safe_text`).

Hostile or careless listings never stop discovery with a traceback: every bad metadata entry or
manifest row is one line in :attr:`Discovery.problems` (naming the file and the key or line) and
is skipped; a file listed twice with different labels is refused, naming both listings.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from fakeprobe.core.schema import IMAGE_SUFFIXES, VIDEO_SUFFIXES, media_kind
from fakeprobe.errors import LayoutError

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
        raise ValueError(f"unknown label {_short(value)} (use real or fake)")
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
        raise ValueError(f"{size / 1e6:.0f} MB, over the {MAX_LISTING_BYTES / 1e6:.0f} MB a "
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


# --- FaceForensics++ ------------------------------------------------------------------------

def _ffpp_parse(path: Path) -> tuple[str, str, str, list[str]] | None:
    """(label, dataset, method, identity nodes) of a file in an FF++ tree, or None."""
    parts = path.parts
    for root in _FFPP_ROOTS:
        if root in parts:
            at = parts.index(root)
            break
    else:
        return None
    tail = parts[at + 1 :]
    if len(tail) < 2:
        return None
    source = tail[0]
    compression = tail[1] if len(tail) > 2 and tail[1] in ("raw", "c0", "c23", "c40") else ""
    dataset = f"FaceForensics++ {compression}".strip()
    stem = path.stem if path.is_file() or path.suffix else path.name
    if root == "original_sequences":
        if source == "actors":  # DFD actors: "01__kitchen_pan"
            return REAL, dataset, "original_actors", [f"actor:{stem.split('__')[0]}"]
        return REAL, dataset, f"original_{source}", [stem]
    if source == "DeepFakeDetection":  # "01_02__kitchen_pan__ABCDEF"
        pair = stem.split("__")[0].split("_")
        return FAKE, dataset, source, [f"actor:{p}" for p in pair]
    return FAKE, dataset, source, stem.split("_")[:2]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, nodes: list[str]) -> None:
        roots = [self.find(n) for n in nodes]
        for other in roots[1:]:
            self.parent[self.find(other)] = self.find(roots[0])

    def components(self) -> dict[str, str]:
        """node -> a name for its component: its members sorted and joined by '-'."""
        members: dict[str, list[str]] = {}
        for node in self.parent:
            members.setdefault(self.find(node), []).append(node)
        return {n: "-".join(sorted(m)) for m in members.values() for n in m}


# --- DFDC ------------------------------------------------------------------------------------

#: A DFDC metadata entry that could not be understood: its file is skipped, not guessed at.
_BAD_ENTRY = None


def _load_dfdc_metadata(folder: Path, problems: list[str]
                        ) -> dict[str, tuple[str | None, str, str] | None] | None:
    """``name -> (label, group, method)`` of a folder's ``metadata.json``, None when there is
    none. An entry that cannot be understood maps to None (one problem line each); a file that
    is not a JSON object gives one problem line and no entries (its videos are unlabelled)."""
    meta = folder / "metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(_read_listing(meta).decode("utf-8-sig"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object of entries")
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        reason = ("nested too deeply" if isinstance(exc, RecursionError)
                  else "too large" if isinstance(exc, MemoryError) else str(exc))
        problems.append(f"{meta}: unreadable DFDC metadata ({reason}); its videos are unlabelled")
        return {}
    entries: dict[str, tuple[str | None, str, str] | None] = {}
    for name, entry in data.items():
        try:
            entries[name] = _dfdc_fields(name, entry)
        except ValueError as exc:
            problems.append(f"{meta}: entry {_short(safe_text(name))}: {exc}; skipped")
            entries[name] = _BAD_ENTRY
    return entries


def _dfdc_fields(name: str, entry: object) -> tuple[str | None, str, str]:
    """(label, group, method) of one entry; ValueError for anything not understood."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError("not a plain file name")
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {type(entry).__name__}, not an object with a label")
    label = parse_label(entry.get("label"))
    original = entry.get("original") or name
    if not isinstance(original, str):
        raise ValueError(f"'original' is {_short(original)}, not a file name")
    stem = safe_text(Path(original).stem) or safe_text(original)
    return label, f"dfdc:{stem}", "dfdc_fake" if label == FAKE else "dfdc_real"


# --- folders ---------------------------------------------------------------------------------

def _folder_label(rel_parts: tuple[str, ...]) -> tuple[str | None, str, str]:
    """Label from the nearest ``real``/``fake`` folder; the folder above it names the dataset
    and the folder below it (if any) the method."""
    for i in range(len(rel_parts) - 2, -1, -1):
        word = rel_parts[i].lower()
        if word in (REAL, FAKE):
            below = rel_parts[i + 1] if i + 1 < len(rel_parts) - 1 else ""
            above = rel_parts[i - 1] if i > 0 else ""
            return word, above, below or word
    return None, "", ""


def _scan_folder(root: Path, frame_folders: bool, found: Discovery,
                 ffpp: list[tuple[MediaItem, list[str]]]) -> None:
    base = root.parent
    metadata_cache: dict[Path, dict | None] = {}
    for path in _walk(root, frame_folders):
        if path.name == "metadata.json":
            metadata_cache[path.parent] = _load_dfdc_metadata(path.parent, found.problems)
            continue
        kind = media_kind(path)
        if kind is None:
            continue
        item = MediaItem(id=_item_id(path, base), path=path, kind=kind)
        parsed = _ffpp_parse(path)
        if parsed is not None:
            label, dataset, method, nodes = parsed
            ffpp.append((replace(item, label=label, dataset=dataset, method=method), nodes))
            continue
        folder = path.parent
        if folder not in metadata_cache:
            metadata_cache[folder] = _load_dfdc_metadata(folder, found.problems)
        meta = metadata_cache[folder]
        if meta is not None and path.name in meta:
            fields = meta[path.name]
            if fields is _BAD_ENTRY:  # reported when the metadata was read
                continue
            label, group, method = fields
            found.items.append(replace(item, label=label, group=group, dataset="DFDC",
                                       method=method))
            continue
        label, dataset, method = _folder_label(Path(item.id).parts)
        found.items.append(replace(item, label=label, group=item.id, dataset=dataset,
                                   method=method))
    # DFDC entries listed in a metadata.json but absent from the disk
    for folder, meta in sorted(metadata_cache.items()):
        for name, fields in sorted((meta or {}).items()):
            path = folder / name
            if fields is _BAD_ENTRY or _exists(path) is not False:
                continue
            label, group, method = fields
            found.items.append(MediaItem(id=_item_id(path, base), path=path, kind="video",
                                         label=label, group=group, dataset="DFDC",
                                         method=method))


# --- CSV manifests ---------------------------------------------------------------------------

#: Manifest columns fakeprobe reads; others are allowed and ignored.
_CSV_FIELDS = ("path", "label", "group", "dataset", "method")


def _csv_rows(csv_path: Path) -> Iterable[tuple[int, list[str] | str]]:
    """(line, fields) of every row of a manifest, or (line, reason) for a row the csv module
    refused; LayoutError for a manifest that cannot be read at all."""
    try:
        raw = _read_listing(csv_path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise LayoutError(f"{csv_path}: cannot read ({reason})") from None
    # bytes that are not UTF-8 survive decoding as surrogates, so each bad row is named alone
    text = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, str(exc)
            continue
        yield reader.line_num, fields


def _csv_id(csv_path: Path, row_path: str, resolved: Path) -> str:
    """The id of a manifest row: its path relative to the folder above the manifest's, or, for
    a path outside it, relative to the deepest folder the two share (never ``..``)."""
    item_id = Path(os.path.normpath(Path(csv_path.parent.name) / row_path)).as_posix()
    if item_id == ".." or item_id.startswith(("../", "/")) or Path(item_id).is_absolute():
        base = csv_path.resolve().parent.parent
        common = Path(os.path.commonpath([base, resolved]))
        item_id = _item_id(resolved, common) if resolved != common else resolved.name
    return safe_text(item_id)


def _scan_csv(csv_path: Path, found: Discovery) -> None:
    rows = iter(_csv_rows(csv_path))
    header = next(rows, None)
    if header is None:
        raise LayoutError(f"{csv_path}: empty manifest; it needs a header line with a 'path' "
                          "column (and 'label', optionally 'group', 'dataset', 'method')")
    line, names = header
    if isinstance(names, str):
        raise LayoutError(f"{csv_path}:{line}: unreadable header ({names})")
    columns = [safe_text(c.strip().lower()) for c in names]
    if "path" not in columns:
        raise LayoutError(f"{csv_path}: a manifest needs a 'path' column (and 'label', "
                          f"optionally 'group', 'dataset', 'method'); found {columns[:10]}")
    where = {name: columns.index(name) for name in _CSV_FIELDS if name in columns}
    first: dict[Path, tuple[int, MediaItem]] = {}
    refused: set[Path] = set()
    for line, fields in rows:
        if isinstance(fields, str):
            found.problems.append(f"{csv_path}:{line}: {fields}, row skipped")
            continue
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) > len(columns):
            found.problems.append(f"{csv_path}:{line}: {len(fields)} fields but the header has "
                                  f"{len(columns)}, row skipped")
            continue
        row = {name: fields[k].strip() if k < len(fields) else ""
               for name, k in where.items()}
        if any(safe_text(v) != v for v in row.values()):
            found.problems.append(f"{csv_path}:{line}: not valid UTF-8 (save the manifest as "
                                  "UTF-8), row skipped")
            continue
        if not row.get("path"):
            found.problems.append(f"{csv_path}:{line}: empty path, row skipped")
            continue
        shown = row["path"] if len(row["path"]) <= 80 else row["path"][:77] + "..."
        if "\0" in row["path"]:
            found.problems.append(f"{csv_path}:{line}: the path holds a NUL byte, row skipped")
            continue
        path = (csv_path.parent / row["path"]).resolve()
        exists = _exists(path)
        if exists is None:
            found.problems.append(f"{csv_path}:{line}: {shown!r} is not a usable path (too "
                                  "long?), row skipped")
            continue
        try:
            label = parse_label(row.get("label"))
        except ValueError as exc:
            found.problems.append(f"{csv_path}:{line}: {exc}, row skipped")
            continue
        kind = media_kind(path) if exists else media_kind(Path(row["path"]))
        if kind is None:
            found.problems.append(f"{csv_path}:{line}: {shown} is not a video, "
                                  "image or folder of frames, row skipped")
            continue
        item_id = _csv_id(csv_path, row["path"], path)
        item = MediaItem(
            id=item_id, path=path, kind=kind, label=label,
            group=row.get("group") or item_id, dataset=row.get("dataset", ""),
            method=row.get("method", "") or (label or ""),
        )
        if path in refused:
            found.problems.append(f"{csv_path}:{line}: {shown} was refused above (listed "
                                  "with conflicting fields), row skipped")
            continue
        if path in first:
            seen_line, seen = first[path]
            if seen != item:
                found.problems.append(
                    f"{csv_path}:{seen_line} and line {line} list {shown} differently "
                    f"({_difference(seen, item)}); both rows refused")
                refused.add(path)
                found.items.remove(seen)
            continue  # an identical repeat adds nothing
        first[path] = (line, item)
        found.items.append(item)


def _difference(a: MediaItem, b: MediaItem) -> str:
    """What two listings of one file disagree on, e.g. ``label real vs fake``."""
    parts = [f"{name} {getattr(a, name) or '-'} vs {getattr(b, name) or '-'}"
             for name in ("label", "group", "dataset", "method")
             if getattr(a, name) != getattr(b, name)]
    return ", ".join(parts)


# --- entry point -----------------------------------------------------------------------------

def discover(inputs: Iterable[Path | str], *, frame_folders: bool = False) -> Discovery:
    """Every media item under ``inputs`` with label, group, dataset and method where known.

    ``frame_folders`` makes each leaf folder of images one video (a folder of frames) instead of
    one item per image. Items whose file is absent are kept (``item.exists`` is False) so that
    the caller can report and record them. Ids are unique: a second item with an id already
    seen is dropped with a problem line.
    """
    found = Discovery()
    ffpp: list[tuple[MediaItem, list[str]]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise LayoutError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() == ".csv":
            _scan_csv(path, found)
        elif path.is_dir():
            _scan_folder(path.resolve(), frame_folders, found, ffpp)
        elif media_kind(path) is not None:
            item = MediaItem(id=path.name, path=path.resolve(), kind=media_kind(path) or "")
            parsed = _ffpp_parse(path.resolve())
            if parsed is not None:
                label, dataset, method, nodes = parsed
                ffpp.append((replace(item, label=label, dataset=dataset, method=method), nodes))
            else:
                found.items.append(replace(item, group=item.id))
        else:
            found.problems.append(f"{path}: not a video, image, folder or CSV manifest, skipped")

    if ffpp:
        groups = _UnionFind()
        for _, nodes in ffpp:
            groups.union(nodes)
        names = groups.components()
        found.items.extend(replace(item, group=f"ffpp:{names[nodes[0]]}") for item, nodes in ffpp)

    unique: dict[str, MediaItem] = {}
    refused: set[str] = set()
    for item in found.items:
        item = replace(item, id=safe_text(item.id), group=safe_text(item.group),
                       dataset=safe_text(item.dataset), method=safe_text(item.method))
        if item.id in refused:
            continue
        if item.id in unique:
            seen = unique[item.id]
            if seen.path != item.path:
                found.problems.append(f"{safe_text(str(item.path))}: id {item.id!r} is taken "
                                      f"by {safe_text(str(seen.path))}, skipped")
            elif seen != item:  # one file, two listings that disagree: neither is trusted
                found.problems.append(f"{item.id}: listed twice with different fields "
                                      f"({_difference(seen, item)}); refused")
                refused.add(item.id)
                del unique[item.id]
            continue
        unique[item.id] = item
    found.items = sorted(unique.values(), key=lambda i: i.id)
    return found
