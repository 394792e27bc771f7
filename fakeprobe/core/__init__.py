"""The shared schema and geometry every layer of fakeprobe may import.

Nothing here imports another fakeprobe package except :mod:`fakeprobe.errors`: the extractor
config (:mod:`~fakeprobe.core.config`), cache field names, label codes and media suffixes
(:mod:`~fakeprobe.core.schema`), the face template (:mod:`~fakeprobe.core.geometry`), file
checksums (:mod:`~fakeprobe.core.checksums`), provenance (:mod:`~fakeprobe.core.provenance`),
TensorFlow and device setup (:mod:`~fakeprobe.core.tf`) and cost measurement
(:mod:`~fakeprobe.core.resources`). See ``docs/architecture.md`` for the layers above.
"""
