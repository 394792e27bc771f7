"""fakeprobe: tell deepfake videos and images from real ones.

Pretrained face features are extracted once and cached per frame in HDF5; classical heads are
trained on the cache and frame scores are aggregated to video scores.
"""

__version__ = "0.1.0"
