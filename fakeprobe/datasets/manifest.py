"""CSV manifests: one row per media item (``path``, ``label``, ``group``, ``dataset``,
``method``)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable

from fakeprobe.core.schema import media_kind
from fakeprobe.datasets.items import (Discovery, MediaItem, _exists, _item_id, _read_listing,
                                      parse_label, safe_text)
from fakeprobe.errors import LayoutError


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
