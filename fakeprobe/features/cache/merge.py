"""Appending staged items to an open cache file, a batch at a time.

Each batch costs one resize and one write per dataset, whatever its number of items: the new
rows of every column are gathered in memory first. Only an item that replaces a failure (tried
again) and the feature sets added to items already cached are written item by item.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import h5py
import numpy as np

from fakeprobe.core.schema import LABEL_CODES
from fakeprobe.errors import CacheError
from fakeprobe.features.cache.schema import (_FRAME_COLUMNS, _VIDEO_COLUMNS, FrameRows,
                                             StagedItem, retried)

#: Bytes of one chunk of a feature set's data (a commit rewrites the last, partly filled one).
FEATURE_CHUNK_BYTES = 1 << 18


@dataclass
class Known:
    """What a commit leaves for the next commit of the same writer session: the file's
    identity after it (inode, size, modification time) and every item's position and status,
    so that the next commit, if the file is unchanged, need not read them again."""

    stamp: tuple[int, int, int]
    index: dict[str, int]
    status: list[str]


def _ensure_feature(h5: h5py.File, name: str, dim: int, config: dict | None, n_rows: int,
                    n_videos: int) -> h5py.Group:
    features = h5["features"]
    if name in features:
        group = features[name]
        if group["data"].shape[1] != dim:
            raise CacheError(f"feature set {name!r}: cache holds {group['data'].shape[1]}-d "
                             f"vectors, the new item has {dim}-d")
        return group
    group = features.create_group(name)
    group.create_dataset("data", shape=(n_rows, dim), maxshape=(None, dim), dtype=np.float32,
                         chunks=(max(1, min(4096, FEATURE_CHUNK_BYTES // (4 * dim))), dim),
                         fillvalue=np.nan)
    group.create_dataset("done", shape=(n_videos,), maxshape=(None,), dtype=np.bool_,
                         chunks=(1024,), fillvalue=False)
    group.attrs["config"] = json.dumps(config or {"name": name, "dim": dim})
    return group


class Merger:
    """Appends staged items to an open cache file (see the module docstring)."""

    def __init__(self, h5: h5py.File, feature_configs: dict[str, dict],
                 known: Known | None = None) -> None:
        self.h5 = h5
        self.feature_configs = feature_configs
        if known is not None:  # updated in place: the session forgets it while committing
            self.index, self.status = known.index, known.status
        else:
            ids = h5["videos/id"].asstr()[:]
            self.index = {vid: i for i, vid in enumerate(ids)}
            self.status = list(h5["videos/status"].asstr()[:])
        self.items_added = 0
        self.rows_added = 0

    def merge(self, items: list[StagedItem]) -> int:
        """Merge a batch (new items first, then feature sets of cached items); return how many
        items were new."""
        merged = self._merge_videos([item for item in items if item.kind != "features"])
        for item in items:
            if item.kind == "features":
                merged += self._merge_features(item)
        return merged

    def _merge_videos(self, items: list[StagedItem]) -> int:
        h5 = self.h5
        n_videos, first_row = h5["videos/id"].shape[0], h5["frames/video"].shape[0]
        plan: list[tuple[StagedItem, int, int, FrameRows]] = []
        row, appended = first_row, 0
        for item in items:
            existing = self.index.get(item.record.id)
            if existing is not None and not retried(self.status[existing]):
                continue  # already cached: a repeat of committed work
            if existing is None:
                position = n_videos + appended
                appended += 1
                self.index[item.record.id] = position
                self.status.append(item.record.status)
            else:
                position = existing
                self.status[position] = item.record.status
            rows = item.rows if item.rows is not None else FrameRows.empty()
            plan.append((item, position, row, rows))
            row += len(rows)
        if not plan:
            return 0
        total_videos, total_rows = n_videos + appended, row
        latest = {position: (item, start, len(rows)) for item, position, start, rows in plan}
        self._write_videos(latest, n_videos, total_videos)
        self._write_frames(plan, first_row, total_rows)
        self._write_features(plan, latest, n_videos, total_videos, first_row, total_rows)
        if "crops" in h5:
            crops = h5["crops"]
            crops.resize(total_rows, axis=0)
            for item, _, start, rows in plan:
                if item.crops is not None and len(rows):
                    crops[start:start + len(rows)] = item.crops
        self.items_added += appended
        self.rows_added += total_rows - first_row
        return len(plan)

    def _write_videos(self, latest: dict[int, tuple[StagedItem, int, int]], n_videos: int,
                      total_videos: int) -> None:
        columns = {}
        for position, (item, start, count) in latest.items():
            values = asdict(item.record)
            values.update(label=LABEL_CODES[item.record.label], row_start=start,
                          row_count=count)
            columns[position] = values
        new = range(n_videos, total_videos)
        for name in _VIDEO_COLUMNS:
            dataset = self.h5[f"videos/{name}"]
            dataset.resize(total_videos, axis=0)
            if len(new):
                dataset[n_videos:] = np.array([columns[p][name] for p in new],
                                              dtype=dataset.dtype)
            for position in sorted(p for p in columns if p < n_videos):
                dataset[position] = columns[position][name]

    def _write_frames(self, plan: list[tuple[StagedItem, int, int, FrameRows]],
                      first_row: int, total_rows: int) -> None:
        frames = self.h5["frames"]
        video = np.concatenate([np.full(len(rows), position, dtype=np.int32)
                                for _, position, _, rows in plan])
        values = {"video": video}
        for name in _FRAME_COLUMNS:
            if name != "video":
                values[name] = np.concatenate([rows.columns()[name] for *_, rows in plan])
        for name, column in values.items():
            dataset = frames[name]
            dataset.resize(total_rows, axis=0)
            if total_rows > first_row:
                dataset[first_row:] = column

    def _write_features(self, plan, latest, n_videos: int, total_videos: int, first_row: int,
                        total_rows: int) -> None:
        h5 = self.h5
        for item, *_ in plan:
            for name, values in item.features.items():
                _ensure_feature(h5, name, values.shape[1], self.feature_configs.get(name),
                                first_row, n_videos)
        for name, group in h5["features"].items():
            data, done = group["data"], group["done"]
            data.resize(total_rows, axis=0)  # rows not written read as NaN (the fill value)
            having = [(start, rows, item.features[name]) for item, _, start, rows in plan
                      if name in item.features and len(rows)]
            if having:
                block = np.full((total_rows - first_row, data.shape[1]), np.nan, np.float32)
                for start, rows, values in having:
                    block[start - first_row:start - first_row + len(rows)] = values
                data[first_row:] = block
            done.resize(total_videos, axis=0)
            flags = {p: name in item.features for p, (item, _, _) in latest.items()}
            if total_videos > n_videos:
                done[n_videos:] = np.array([flags[p] for p in range(n_videos, total_videos)])
            for position in sorted(p for p in flags if p < n_videos):
                done[position] = flags[position]

    def _merge_features(self, item: StagedItem) -> bool:
        h5 = self.h5
        position = self.index.get(item.record.id)
        if position is None:
            raise CacheError(f"staged features for {item.record.id!r}, which is not cached")
        start = int(h5["videos/row_start"][position])
        count = int(h5["videos/row_count"][position])
        merged = False
        n_rows, n_videos = h5["frames/video"].shape[0], h5["videos/id"].shape[0]
        for name, values in item.features.items():
            group = _ensure_feature(h5, name, values.shape[1], self.feature_configs.get(name),
                                    n_rows, n_videos)
            if group["done"][position]:
                continue
            if len(values) != count:
                raise CacheError(f"{item.record.id}: {len(values)} feature rows for {count} "
                                 "cached rows")
            if count:
                group["data"][start:start + count] = values
            group["done"][position] = True
            merged = True
        return merged

    def known(self, stamp: tuple[int, int, int]) -> Known:
        return Known(stamp, self.index, self.status)

