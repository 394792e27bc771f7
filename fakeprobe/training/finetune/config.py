"""The settings of a fine-tuning run: the bases that can be fine-tuned, augmentation and the
run's frozen config."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from fakeprobe.errors import ConfigError, FakeprobeError
from fakeprobe.extractor.backbones.imagenet import EFFICIENTNET_LITE0, MOBILENET_V2, PortedSpec

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
                raise ConfigError(f"augmentation probability {step}={p} is not in [0, 1]")
        object.__setattr__(self, "blur_sigma", tuple(self.blur_sigma))
        object.__setattr__(self, "jpeg_quality", tuple(self.jpeg_quality))
        object.__setattr__(self, "cutout_size", tuple(self.cutout_size))

    @classmethod
    def only(cls, steps: tuple[str, ...] | list[str]) -> AugmentConfig:
        """The named steps at their default probabilities, the others off."""
        unknown = [s for s in steps if s not in cls.STEPS]
        if unknown:
            raise ConfigError(f"unknown augmentation {', '.join(unknown)}; choose from "
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
    ``fresh_blends``: each self-blend twin drawn for training is blended anew from its source
    real crop (see :mod:`fakeprobe.training.finetune.blends`); validation keeps the stored ones.
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
    fresh_blends: bool = False

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
