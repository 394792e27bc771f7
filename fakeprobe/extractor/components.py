"""Every registered detector and backbone (importing this module registers them all).

Registration is cheap: the modules imported here import TensorFlow, dlib and the like only when
a component is created.
"""

from fakeprobe.extractor import backbones as _backbones  # noqa: F401  (registers backbones)
from fakeprobe.extractor import detectors as _detectors  # noqa: F401  (registers detectors)
from fakeprobe.extractor.base import BACKBONES, DETECTORS

__all__ = ["BACKBONES", "DETECTORS"]
