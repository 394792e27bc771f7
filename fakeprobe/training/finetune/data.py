"""The crops a fine-tuning run trains on, and their split into training and validation
items by group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.extractor.align import can_recrop
from fakeprobe.features.cache import CacheReader
from fakeprobe.features.crops import CropError, row_crops
from fakeprobe.training.finetune.config import FAKE_SOURCES, NATIVE_SIZE, FinetuneError

@dataclass
class CropSet:
    """Face crops of the selected items at the network's input geometry.

    ``item`` indexes the per-item columns (``ids``, ``labels`` 0/1, ``groups``, ``methods``,
    ``datasets``); ``crops`` is ``(rows, S, S, 3)`` uint8 RGB.
    """

    crops: np.ndarray
    item: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    methods: np.ndarray
    datasets: np.ndarray
    stored: CropSpec
    spec: CropSpec
    upsampled: bool = False

    @property
    def self_blend(self) -> np.ndarray:
        """Per item: a pseudo-fake made from real footage."""
        return self.methods == SELF_BLEND_METHOD


def stored_crop_spec(cache: CacheReader) -> CropSpec:
    """Geometry of a cache's stored crops, or :class:`FinetuneError` if it has none."""
    size = cache.config.keep_crops
    if not cache.has_crops or not size:
        raise FinetuneError(
            f"{cache.path} holds no face crops, and fine-tuning trains on stored crops: "
            "extract into a new cache with --keep-crops N (N at least the input size, e.g. "
            "224), e.g. `fakeprobe extract DATA --out NEW.h5 --keep-crops 224`")
    return CropSpec(int(size), CONTEXT_MARGIN)


def default_input_size(stored: CropSpec) -> int:
    return min(stored.size, NATIVE_SIZE)


def load_crops(cache_path: Path | str, selection=None, input_size: int | None = None,
               frames_per_item: int = 0, allow_upsample: bool = False,
               groups: Sequence[str] | None = None) -> CropSet:
    """The face crops of every selected, labelled, readable item, cut to ``input_size``.

    ``selection`` is a :class:`fakeprobe.classifiers.data.Selection` (default: every labelled
    item); ``groups``, when given, keeps only items of those groups (the training part of an
    outer grouped split, so that a net fine-tuned inside a cross-validation never sees a test
    group). Raises :class:`FinetuneError` when the cache has no crops, when the input would need
    upsampling (unless ``allow_upsample``) or when nothing is left.
    """
    from fakeprobe.classifiers.data import Selection

    selection = selection or Selection()
    with CacheReader(cache_path) as cache:
        stored = stored_crop_spec(cache)
        size = input_size or default_input_size(stored)
        spec = CropSpec(int(size), CONTEXT_MARGIN)
        upsampled = not can_recrop(stored, spec)
        if upsampled and not allow_upsample:
            raise FinetuneError(
                f"{cache.path} stores {stored.size} px crops; a {spec.size} px input would be "
                f"upsampled from them: use an input size of at most {stored.size} or "
                "allow upsampling (--allow-upsample)")
        videos = cache.videos()
        has_face = cache.frames(("has_face",))["has_face"]
        wanted_groups = None if groups is None else set(groups)
        keep = {i for i in range(cache.n_videos)
                if videos["status"][i] == "ok" and videos["label"][i] in ("real", "fake")
                and selection.keeps(videos["dataset"][i], videos["method"][i],
                                    videos["label"][i], videos["group"][i])
                and (wanted_groups is None or videos["group"][i] in wanted_groups)}
        rows_of: dict[int, np.ndarray] = {}
        for position, rows in cache.iter_video_rows():
            if position not in keep:
                continue
            face = np.flatnonzero(has_face[rows]) + rows.start
            if frames_per_item and len(face) > frames_per_item:
                face = face[np.linspace(0, len(face) - 1, frames_per_item).round().astype(int)]
            if len(face):
                rows_of[position] = face
        positions = sorted(rows_of)
        if not positions:
            raise FinetuneError(f"{cache.path}: no labelled item with a face is selected")
        item = np.concatenate([np.full(len(rows_of[p]), k, np.int64)
                               for k, p in enumerate(positions)])
        try:
            crops = row_crops(cache, np.concatenate([rows_of[p] for p in positions]), spec,
                              media=False, upsample=True, strict=True)[spec]
        except CropError as exc:
            raise FinetuneError(f"{exc}; fine-tuning trains on stored crops only") from None
    pick = np.asarray(positions)
    return CropSet(
        crops=crops, item=item, ids=videos["id"][pick].astype(str),
        labels=np.where(videos["label"][pick] == "fake", 1, 0),
        groups=videos["group"][pick].astype(str), methods=videos["method"][pick].astype(str),
        datasets=videos["dataset"][pick].astype(str), stored=stored, spec=spec,
        upsampled=upsampled)


@dataclass
class Split:
    """Item positions (into a :class:`CropSet`) used for training and for validation."""

    train: np.ndarray
    val: np.ndarray
    val_groups: list[str]
    val_uses_self_blend: bool


def split_items(labels: np.ndarray, groups: np.ndarray, self_blend: np.ndarray, *,
                val_fraction: float = 0.2, val_fold: int = 0, fakes: str = "all",
                seed: int = 0) -> Split:
    """Grouped, label-stratified train/validation split of items (never of frames).

    Every group lies on one side. Training fakes follow ``fakes`` (``all``, ``real``: true
    fakes only, ``self-blend``: pseudo-fakes only). Validation holds the reals and true fakes of
    its groups, or, when those hold no true fake, their pseudo-fakes.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels), np.asarray(groups)
    self_blend = np.asarray(self_blend, bool)
    if fakes not in FAKE_SOURCES:
        raise FinetuneError(f"fakes must be one of: {', '.join(FAKE_SOURCES)}")
    everything = np.arange(len(labels))
    if val_fraction:
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise FinetuneError(f"a grouped validation split needs at least 2 groups; the "
                                f"selection has {n_groups} (or use val_fraction 0)")
        if len(np.unique(labels)) < 2:
            raise FinetuneError("the selection holds a single class: fine-tuning needs real "
                                "and fake items")
        k = min(max(2, round(1 / val_fraction)), n_groups)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(everything, labels, groups))
        train, val = folds[val_fold % k]
    else:
        train, val = everything, everything[:0]
    true_fake = (labels == 1) & ~self_blend
    if fakes == "real":
        train = train[~self_blend[train]]
    elif fakes == "self-blend":
        train = train[~true_fake[train]]
    use_self_blend = not true_fake[val].any()
    if not use_self_blend:
        val = val[~self_blend[val]]
    for name, part in (("training", train), ("validation", val)):
        if (len(part) or name == "training") and len(np.unique(labels[part])) < 2:
            which = {"all": "fakes", "real": "true fakes", "self-blend": "self-blend fakes"}
            raise FinetuneError(
                f"the {name} part holds a single class ({len(part)} items; fakes used for "
                f"training: {which[fakes]}): select more groups, change --fakes, or try "
                "another --val-fold")
    return Split(np.sort(train), np.sort(val), sorted(set(groups[val].tolist())),
                 bool(use_self_blend and len(val)))
