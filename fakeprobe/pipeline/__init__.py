"""The extraction run: media -> sampled frames -> faces -> aligned crops -> features -> cache.

It composes the layers below it: finding the media (:mod:`fakeprobe.datasets`), self-blended
pseudo-fakes (:mod:`fakeprobe.synth`), decoding, detection, alignment and embedding
(:mod:`fakeprobe.extractor`) and the cache (:mod:`fakeprobe.features.cache`).
:mod:`~fakeprobe.pipeline.steps` holds the per-item steps, :mod:`~fakeprobe.pipeline.run` the
run (:class:`~fakeprobe.pipeline.run.Extractor`, :func:`~fakeprobe.pipeline.run.extract`) and
:mod:`~fakeprobe.pipeline.progress` its summary.
"""
