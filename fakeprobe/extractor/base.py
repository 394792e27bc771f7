"""The contracts between extraction steps: faces, crop geometry, detectors and backbones.

Conventions used everywhere in the extractor:

* frames are ``uint8`` arrays of shape ``(H, W, 3)`` in **BGR** order (OpenCV's order);
* face crops handed to backbones are ``uint8`` arrays of shape ``(n, S, S, 3)`` in **RGB** order;
* the five landmarks are, in image coordinates: the eye on the image's left, the eye on the
  image's right, the nose tip, the mouth corner on the image's left, the mouth corner on the
  image's right (the order of the ArcFace template and of YuNet's output).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import ConfigError
from fakeprobe.registry import Registry


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the full-resolution frame."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # (5, 2) float32, order as in the module docstring
    score: float

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])


class Detector(ABC):
    """Finds faces in a BGR frame."""

    name: str

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Face]:
        """All faces in ``frame`` (full resolution, BGR), in any order."""

    def config(self) -> dict:
        """Settings that change the output, stored in the cache for provenance."""
        return {"name": self.name}


class Backbone(ABC):
    """Turns aligned face crops into feature vectors, in batches."""

    name: str  # the feature-set name in the cache
    dim: int
    crop: CropSpec

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 RGB crops of ``self.crop.size`` -> ``(n, dim)`` float32."""

    def check_crops(self, crops: np.ndarray) -> np.ndarray:
        """``crops`` as an array, or ValueError if they are not this backbone's crops."""
        crops = np.asarray(crops)
        size = self.crop.size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ConfigError(f"{self.name} expects (n, {size}, {size}, 3) uint8 RGB crops, got "
                              f"{crops.shape} {crops.dtype}")
        return crops

    def config(self) -> dict:
        """Settings and weights identity, stored in the cache for provenance."""
        return {"name": self.name, "dim": self.dim, "crop_size": self.crop.size,
                "crop_margin": self.crop.margin}


DETECTORS: Registry[Detector] = Registry("detector")
BACKBONES: Registry[Backbone] = Registry("backbone")
