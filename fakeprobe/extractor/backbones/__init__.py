"""Backbones: each module registers its networks in ``fakeprobe.extractor.base.BACKBONES``."""

from fakeprobe.extractor.backbones import imagenet  # noqa: F401
from fakeprobe.extractor.backbones import face_embedders  # noqa: F401  (sface, dlib-resnet)
from fakeprobe.extractor.backbones import spectrum  # noqa: F401  (spectrum)
from fakeprobe.extractor.backbones import finetuned  # noqa: F401  (finetuned)
from fakeprobe.extractor.backbones import artifacts  # noqa: F401  (cnn-stats, srm, face-context)
from fakeprobe.extractor.backbones import forensic  # noqa: F401  (forensic: shipped encoder)
