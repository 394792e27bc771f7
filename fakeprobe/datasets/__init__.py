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

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from fakeprobe.core.schema import media_kind
from fakeprobe.datasets.items import (FAKE, MAX_LISTING_BYTES, REAL, SELF_BLEND_METHOD,
                                      SELF_BLEND_SUFFIX, Discovery, MediaItem, parse_label,
                                      safe_text, self_blend_twin, with_self_blends)
from fakeprobe.datasets.layouts import _UnionFind, _ffpp_parse, _scan_folder
from fakeprobe.datasets.manifest import _difference, _scan_csv
from fakeprobe.errors import LayoutError


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


__all__ = ["FAKE", "MAX_LISTING_BYTES", "REAL", "SELF_BLEND_METHOD", "SELF_BLEND_SUFFIX",
           "Discovery", "MediaItem", "discover", "parse_label", "safe_text", "self_blend_twin",
           "with_self_blends"]
