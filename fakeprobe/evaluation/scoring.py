"""Scoring aligned face crops through a model's backbones and head (what occlusion maps hide
patches from).

Crops are scored at one geometry per explanation, so that what is hidden in the shown crop is
hidden from every backbone: the cache's stored crops when every backbone's crop can be cut from
them (:func:`fakeprobe.extractor.align.can_recrop`), otherwise crops re-aligned from the re-read
frames, with the cached landmarks, at the smallest geometry that covers every backbone
(:meth:`ModelScorer.covering_spec`). Backbones are loaded and checked against the model's
recorded feature configs by :func:`fakeprobe.extractor.backbones.load.load_backbone`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from fakeprobe.classifiers.model import Model
from fakeprobe.core.config import CONTEXT_MARGIN
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import ConfigError, FakeprobeError
from fakeprobe.evaluation.occlusion import ScoreFn
from fakeprobe.extractor.align import can_recrop, recrop
from fakeprobe.extractor.base import Backbone
from fakeprobe.training.cv import fake_proba


def backbone_specs(model: Model) -> dict[str, CropSpec]:
    """Each feature set's crop geometry, from the model's ``feature_configs``."""
    specs = {}
    for name in model.features:
        cfg = model.provenance.get("feature_configs", {}).get(name, {})
        if "crop_size" not in cfg:
            raise FakeprobeError(f"feature set {name!r} of this model records no crop geometry: "
                                 "it was not made by a backbone that can be run again, so its "
                                 "frames cannot be explained")
        specs[name] = CropSpec(int(cfg["crop_size"]), float(cfg.get("crop_margin", 0.0)))
    return specs


def covering_spec(specs: Iterable[CropSpec], margin: float = CONTEXT_MARGIN) -> CropSpec:
    """The smallest crop geometry from which every one of ``specs`` can be cut without loss:
    the widest margin (at least ``margin``, so that the jaw line and the blending boundary show
    in the explanation), at the size that needs no upsampling for any of them."""
    specs = list(specs)
    margin = max([margin, *(s.margin for s in specs)])
    size = max(math.ceil(s.size * (1 + 2 * margin) / (1 + 2 * s.margin) - 1e-6) for s in specs)
    return CropSpec(int(size), float(margin))


class ModelScorer:
    """P(fake) of aligned face crops through a model's backbones and head.

    ``score(crops, spec)`` takes crops of geometry ``spec`` (RGB uint8), recrops them to each
    feature set's backbone crop (read from the model's ``feature_configs``), embeds them with
    that backbone, concatenates the features in ``model.features`` order and applies the head.
    Backbones are created on first use and kept (one scorer serves many videos); each one's
    config is checked against the one the model was trained with (weights checksum, crop, dim),
    so an explanation never runs other weights than the model's.
    """

    def __init__(self, model: Model, *, device: str = "auto",
                 weights: dict[str, str] | None = None, batch_size: int = 32) -> None:
        self.model = model
        self.device = device
        self.weights = dict(weights or {})
        self.batch_size = batch_size
        self.specs = backbone_specs(model)
        self._backbones: dict[str, Backbone] = {}

    def backbone(self, name: str) -> Backbone:
        if name not in self._backbones:
            from fakeprobe.extractor.backbones.load import load_backbone

            self._backbones[name] = load_backbone(
                name, weights=self.weights.get(name), device=self.device,
                batch_size=self.batch_size,
                expected=self.model.provenance["feature_configs"][name])
        return self._backbones[name]

    def covers(self, spec: CropSpec) -> bool:
        """True when every backbone's crop can be cut from crops of geometry ``spec``."""
        return all(can_recrop(spec, wanted) for wanted in self.specs.values())

    def covering_spec(self) -> CropSpec:
        """The geometry crops are re-aligned at when the cache's crops do not serve: the
        smallest that covers every backbone, with at least CONTEXT_MARGIN (see
        :func:`covering_spec`)."""
        return covering_spec(self.specs.values())

    def features(self, crops: np.ndarray, spec: CropSpec) -> np.ndarray:
        crops = np.asarray(crops, dtype=np.uint8)
        if not self.covers(spec):
            raise ConfigError(f"crops of {spec} cannot feed every backbone of the model "
                              f"({self.specs})")
        parts = []
        for name in self.model.features:
            wanted = self.specs[name]
            cut = crops if wanted == spec else recrop(crops, spec, wanted)
            parts.append(np.asarray(self.backbone(name).embed(cut), dtype=np.float32))
        return np.concatenate(parts, axis=1)

    def score(self, crops: np.ndarray, spec: CropSpec) -> np.ndarray:
        return fake_proba(self.model.pipeline, self.features(crops, spec))

    def for_spec(self, spec: CropSpec) -> ScoreFn:
        """``score`` bound to one geometry: the ``score_fn`` of :func:`occlusion_map`."""
        return lambda crops: self.score(crops, spec)
