"""The application layer: what the command line, the web server and a notebook call.

Each function takes plain Python arguments (paths as ``str`` or :class:`~pathlib.Path`) and
returns a result object with ``to_dict()`` and ``to_json()``; none prints. Names are imported
on first use, so ``import fakeprobe.app`` loads no network or HDF5 library.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> module (under fakeprobe) that defines it.
EXPORTS: dict[str, str] = {
    # media in
    "extract": "app.media", "ExtractResult": "app.media", "synth": "app.media",
    "sample": "app.media", "SynthResult": "app.media", "SampleResult": "app.media",
    # the cache
    "info": "app.cache", "InfoResult": "app.cache", "components": "app.cache",
    "ComponentsResult": "app.cache", "derive": "app.cache", "DeriveResult": "app.cache",
    # heads
    "fit": "app.heads", "FitResult": "app.heads", "compare": "app.heads",
    "CompareResult": "app.heads", "evaluate": "app.heads", "EvaluateResult": "app.heads",
    "RunFiles": "app.heads",
    "evaluate_mean": "app.ensemble", "MeanResult": "app.ensemble",
    "Protocol": "app.protocol", "make_protocol": "app.protocol",
    "make_selection": "app.protocol", "make_aggregation": "app.protocol",
    "default_features": "app.protocol",
    "Selection": "classifiers.data", "Aggregation": "classifiers.aggregate",
    "ExtractorConfig": "core.config",
    # new media scored
    "predict": "app.scoring", "Predictor": "app.scoring", "Prediction": "app.scoring",
    "PredictResult": "app.scoring",
    # reading decisions
    "explain": "app.reports", "ExplainResult": "app.reports", "report": "app.reports",
    "ReportResult": "app.reports", "finetune": "app.finetuning",
    "FinetuneResult": "app.finetuning",
}

__all__ = sorted(EXPORTS)


def load(name: str) -> Any:
    """The exported object ``name`` (importing its module now)."""
    try:
        module = EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'fakeprobe.app' has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"fakeprobe.{module}"), name)


def __getattr__(name: str) -> Any:
    value = load(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
