"""Frames of a cache as a design matrix, with the filters analysts ask for."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fakeprobe.core.schema import LABEL_CODES, READ_STATUSES
from fakeprobe.errors import FakeprobeError
from fakeprobe.features.cache import CacheReader


def label_code(label: str | None) -> int:
    """1 for fake, 0 for real, -1 for unlabelled (the cache's ``LABEL_CODES``)."""
    return LABEL_CODES.get(label or None, -1)


def label_codes(labels: Sequence[str]) -> np.ndarray:
    """:func:`label_code` of each label."""
    return np.array([label_code(label) for label in labels], dtype=int)


@dataclass(frozen=True)
class Selection:
    """Which items of a cache to use. Patterns are shell-style (``FaceForensics++*``) and match
    the ``dataset``/``method`` columns; ``exclude_*`` win over the includes."""

    datasets: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    exclude_datasets: tuple[str, ...] = ()
    exclude_methods: tuple[str, ...] = ()
    #: Group patterns to drop (e.g. ``ffpp:actor:*``: the FF++ actor originals and anything
    #: made from them, such as their pseudo-fakes).
    exclude_groups: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    labelled_only: bool = True
    #: Real items pass the ``methods`` patterns whatever their method (to name fake methods).
    real_any_method: bool = False

    def keeps(self, dataset: str, method: str, label: str, group: str = "") -> bool:
        def hit(value: str, patterns: Sequence[str]) -> bool:
            return any(fnmatch.fnmatchcase(value, p) for p in patterns)

        if self.labelled_only and label not in ("real", "fake"):
            return False
        if self.labels and label not in self.labels:
            return False
        if self.datasets and not hit(dataset, self.datasets):
            return False
        if self.methods and not hit(method, self.methods) and not (
                self.real_any_method and label == "real"):
            return False
        return not (hit(dataset, self.exclude_datasets) or hit(method, self.exclude_methods)
                    or hit(group, self.exclude_groups))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class FrameData:
    """Rows with a face and every requested feature, and the items they belong to.

    ``video`` indexes the ``videos`` columns (0..n_videos-1). Items selected but with no usable
    row are in ``excluded`` with the reason; they get no score.
    """

    X: np.ndarray
    y: np.ndarray  # per row: 1 fake, 0 real, -1 unlabelled
    video: np.ndarray
    frame_index: np.ndarray
    timestamp: np.ndarray
    track: np.ndarray
    videos: dict[str, np.ndarray]
    features: tuple[str, ...]
    feature_configs: dict[str, dict]
    excluded: list[dict[str, str]] = field(default_factory=list)
    #: Per row, the transform that made it (``extract --augment``), ``""`` for original rows;
    #: ``None``: every row is original. Augmented rows train, and are never scored.
    augment: np.ndarray | None = None

    @property
    def original(self) -> np.ndarray:
        """Per row, whether it is an original row (the only rows ever scored)."""
        if self.augment is None:
            return np.ones(len(self.y), dtype=bool)
        return self.augment == ""

    @property
    def n_videos(self) -> int:
        return len(self.videos["id"])

    @property
    def video_labels(self) -> np.ndarray:
        return label_codes(self.videos["label"])

    @property
    def groups(self) -> np.ndarray:
        """Per row group name."""
        return self.videos["group"][self.video]

    def subset_videos(self, keep: np.ndarray) -> "FrameData":
        """Only the videos whose positions are in ``keep`` (renumbered in that order)."""
        keep = np.asarray(keep, dtype=int)
        remap = np.full(self.n_videos, -1)
        remap[keep] = np.arange(len(keep))
        rows = remap[self.video] >= 0
        return FrameData(
            X=self.X[rows], y=self.y[rows], video=remap[self.video[rows]],
            frame_index=self.frame_index[rows], timestamp=self.timestamp[rows],
            track=self.track[rows], videos={k: v[keep] for k, v in self.videos.items()},
            features=self.features, feature_configs=self.feature_configs,
            excluded=list(self.excluded),
            augment=None if self.augment is None else self.augment[rows],
        )


def load_frames(cache_path: Path | str, features: Iterable[str],
                selection: Selection | None = None, augmented: bool = False) -> FrameData:
    """Concatenate the named feature sets of every selected item's face rows.

    Rows made by ``extract --augment`` are left out unless ``augmented`` (to train: the
    cross-validation fits on them and scores only original rows); anything that scores
    loads without them."""
    selection = selection or Selection()
    features = tuple(dict.fromkeys(features))
    if not features:
        raise FakeprobeError("name at least one feature set (--features)")
    with CacheReader(cache_path) as cache:
        available = cache.feature_sets
        unknown = [f for f in features if f not in available]
        if unknown:
            raise FakeprobeError(
                f"{cache_path}: no feature set {', '.join(map(repr, unknown))}; it holds "
                f"{', '.join(available) or 'none'} (add one with `fakeprobe extract "
                f"--backbone NAME` on the same --out)")
        videos = cache.videos()
        frames = cache.frames(("video", "frame_index", "timestamp", "track", "has_face",
                               "augment"))
        done = {f: cache.feature_done(f) for f in features}
        keep_video = np.array([
            selection.keeps(d, m, lab, g) for d, m, lab, g in
            zip(videos["dataset"], videos["method"], videos["label"], videos["group"])
        ], dtype=bool)
        excluded = []
        for i in np.flatnonzero(keep_video):
            reason = None
            if videos["status"][i] not in READ_STATUSES:
                reason = f"{videos['status'][i]}: {videos['error'][i]}"
            elif videos["status"][i] == "no_face":
                reason = "no_face: no face in any sampled frame"
            else:
                missing = [f for f in features if not done[f][i]]
                if missing:
                    reason = f"features not extracted: {', '.join(missing)}"
            if reason:
                excluded.append({"id": str(videos["id"][i]), "reason": reason})
                keep_video[i] = False
        rows = keep_video[frames["video"]] & frames["has_face"]
        if not augmented:
            rows &= frames["augment"] == ""
        row_index = np.flatnonzero(rows)
        X = np.concatenate([cache.features(f, row_index) if len(row_index) else
                            np.zeros((0, available[f]["dim"]), np.float32)
                            for f in features], axis=1)
    finite = np.isfinite(X).all(axis=1)
    row_index, X = row_index[finite], X[finite]
    positions = np.flatnonzero(keep_video)
    # items whose rows all vanished (non-finite features) get no score either
    with_rows = np.isin(positions, frames["video"][row_index])
    for i in positions[~with_rows]:
        excluded.append({"id": str(videos["id"][i]), "reason": "no usable face row"})
    positions = positions[with_rows]
    remap = np.full(len(videos["id"]), -1)
    remap[positions] = np.arange(len(positions))
    video = remap[frames["video"][row_index]]
    sel_videos = {k: v[positions] for k, v in videos.items()}
    labels = label_codes(sel_videos["label"])
    return FrameData(
        X=X.astype(np.float32, copy=False), y=labels[video] if len(video) else
        np.zeros(0, int), video=video, frame_index=frames["frame_index"][row_index],
        timestamp=frames["timestamp"][row_index], track=frames["track"][row_index],
        videos=sel_videos, features=features,
        feature_configs={f: available[f] for f in features}, excluded=excluded,
        augment=frames["augment"][row_index] if augmented else None,
    )
