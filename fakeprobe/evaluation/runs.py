"""Run records: everything a report needs about one evaluation, as one JSON document.

A run record is what ``fakeprobe compare --save-run RUN.json`` writes and what
``fakeprobe report`` reads (a model file carries one too, for its own cross-validation). It
holds every head x feature-set evaluation with per-video and per-frame scores, the breakdown per
dataset and method, the items that got no score, the caches' contents and failures, the
extractor config and the machine and library versions, so a report can be drawn again later and
elsewhere without the cache.

Layout (``format: "fakeprobe-run"``, ``version: 1``)::

    created, command, kind ("compare" | "fit" | "evaluate")
    cache, eval_cache            summaries of the caches (fakeprobe info), or null
    extractor_config, feature_configs, selection, protocol, aggregation
    environment                  python, platform, cpu, cores, memory, library versions
    excluded                     [{id, reason}] items selected that got no score
    reports                      [EvalReport.to_dict(frames=True)], best video AUC first
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from fakeprobe.core.provenance import environment
from fakeprobe.errors import FakeprobeError

RUN_FORMAT = "fakeprobe-run"
RUN_VERSION = 1


def run_record(kind: str, reports: Iterable, *, cache: Path | str,
               eval_cache: Path | str | None = None, selection: Any = None,
               protocol: Any = None, aggregation: Any = None,
               excluded: list[dict[str, str]] | None = None,
               command: list[str] | None = None) -> dict[str, Any]:
    """The record of an evaluation of ``reports`` (:class:`EvalReport`) made on ``cache``."""
    from dataclasses import asdict

    from fakeprobe.features.cache import CacheReader, summarize

    reports = sorted(reports, key=lambda r: -(r.video.get("roc_auc") or -1.0))
    with CacheReader(cache) as reader:
        feature_sets = reader.feature_sets
    used = sorted({f for r in reports for f in r.features})
    summary = summarize(cache)
    return {
        "format": RUN_FORMAT, "version": RUN_VERSION, "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(command if command is not None else sys.argv),
        "cache": summary,
        "eval_cache": summarize(eval_cache) if eval_cache is not None else None,
        "extractor_config": summary["extractor_config"],
        "feature_configs": {name: feature_sets.get(name, {}) for name in used},
        "selection": selection.to_dict() if selection is not None else None,
        "protocol": protocol.to_dict() if protocol is not None else None,
        "aggregation": asdict(aggregation) if aggregation is not None else None,
        "environment": environment(),
        "excluded": list(excluded or []),
        "reports": [r.to_dict(frames=True) for r in reports],
    }


def finite(data: object) -> object:
    """NaN and infinities as null, recursively: strict JSON has no NaN (an image has no
    timestamp, a one-class subset no AUC)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def save_run(path: Path | str, record: dict[str, Any]) -> Path:
    """Write a run record atomically (strict JSON: NaN becomes null)."""
    from fakeprobe.fileio import write_text

    return write_text(path, json.dumps(finite(record), allow_nan=False, default=str))


def load_run(path: Path | str) -> dict[str, Any]:
    """A run record from ``RUN.json``, or from a model file's stored evaluation."""
    path = Path(path)
    if not path.is_file():
        raise FakeprobeError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FakeprobeError(f"{path}: not JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
            raise FakeprobeError(f"{path}: not a fakeprobe run record (write one with "
                                 "`fakeprobe compare --save-run RUN.json`)")
        if record.get("version") != RUN_VERSION:
            raise FakeprobeError(f"{path}: run record version {record.get('version')!r}, this "
                                 f"fakeprobe reads version {RUN_VERSION}")
        return record
    return model_run(path)


def model_run(path: Path | str) -> dict[str, Any]:
    """A run record made from a model file: its provenance and the evaluation stored with it."""
    from fakeprobe.classifiers.model import read_provenance, read_report

    provenance = read_provenance(path)
    report = read_report(path)
    if report is None:
        raise FakeprobeError(f"{path}: this model file holds no evaluation to report (fit it "
                             "again with this version of fakeprobe)")
    training = provenance.get("training_cache", {})
    return {
        "format": RUN_FORMAT, "version": RUN_VERSION, "kind": "fit",
        "created": provenance.get("created", ""), "command": provenance.get("command", ""),
        "model": str(path),
        "cache": {"path": training.get("path", ""), "items": training.get("items"),
                  "rows": training.get("rows"), "failures": provenance.get("failures", [])},
        "eval_cache": None,
        "extractor_config": provenance.get("extractor_config", {}),
        "feature_configs": provenance.get("feature_configs", {}),
        "selection": provenance.get("selection"),
        "protocol": provenance.get("protocol_options"),
        "aggregation": provenance.get("aggregation"),
        "environment": provenance.get("environment") or {"versions":
                                                         provenance.get("versions", {})},
        "excluded": report.get("excluded", []),
        "reports": [report],
    }
