"""Folder layouts: FaceForensics++, DFDC (``metadata.json``) and ``real/``/``fake/`` folders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from fakeprobe.core.schema import media_kind
from fakeprobe.datasets.items import (FAKE, REAL, _FFPP_ROOTS, Discovery, MediaItem, _exists,
                                      _item_id, _read_listing, _short, _walk, parse_label,
                                      safe_text)


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
