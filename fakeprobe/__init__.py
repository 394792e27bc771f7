"""fakeprobe: tell deepfake videos and images from real ones.

Pretrained face features are extracted once and cached per frame in HDF5; classical heads are
trained on the cache and frame scores are aggregated to video scores.

The Python API (``fakeprobe.extract``, ``fit``, ``compare``, ``evaluate``, ``predict``,
``report``, ``explain``, ``finetune``, ``derive``, ``info``, ``components``...) is the
application layer, :mod:`fakeprobe.app`; its names are imported on first use, so ``import
fakeprobe`` stays cheap (no TensorFlow, no HDF5). Every error fakeprobe raises on purpose is a
:class:`FakeprobeError`.
"""

from __future__ import annotations

from typing import Any

from fakeprobe.errors import (CacheCorrupt, CacheError, CacheLocked, ConfigError,
                              ConfigMismatch, FakeprobeError, InvalidOption, LayoutError,
                              MediaError, MissingDependency, OutputError, SchemaMismatch,
                              UnknownComponent, WeightsError)

__version__ = "0.1.0"

_ERRORS = ["CacheCorrupt", "CacheError", "CacheLocked", "ConfigError", "ConfigMismatch",
           "FakeprobeError", "InvalidOption", "LayoutError", "MediaError", "MissingDependency",
           "OutputError", "SchemaMismatch", "UnknownComponent", "WeightsError"]


def _app():
    import importlib

    return importlib.import_module("fakeprobe.app")


def __getattr__(name: str) -> Any:
    app = _app()
    if name == "app":
        return app
    if name in app.EXPORTS:
        value = app.load(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fakeprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_app().EXPORTS))


__all__ = ["__version__", *_ERRORS, *sorted(
    # the application layer's names (see fakeprobe.app.EXPORTS), imported on first use
    ["extract", "ExtractResult", "synth", "SynthResult", "sample", "SampleResult", "info",
     "InfoResult", "components", "ComponentsResult", "derive", "DeriveResult", "fit",
     "FitResult", "compare", "CompareResult", "evaluate", "EvaluateResult", "RunFiles",
     "evaluate_mean", "MeanResult",
     "Protocol", "make_protocol", "make_selection", "make_aggregation", "default_features",
     "Selection", "Aggregation", "ExtractorConfig", "predict", "Predictor", "Prediction",
     "PredictResult", "explain", "ExplainResult", "report", "ReportResult", "finetune",
     "FinetuneResult"])]
