"""Model files: the fitted pipeline with its provenance, checked on load.

A model file is a zip archive holding ``provenance.json`` (plain JSON: feature sets and their
backbone configs, extractor config, cache schema version, library versions, aggregation,
threshold, CV scores, the training cache's fingerprint, and the SHA-256 of the pipeline) and
``pipeline.joblib`` (the fitted scikit-learn pipeline).

**Loading a pickle runs code.** joblib files are pickles: only load model files you made or
trust. :func:`load_model` reads and checks the JSON first, verifies the pipeline's SHA-256 (a
corrupt or altered file is refused before anything is unpickled), and unpickles only then. The
checksum catches corruption and careless edits; it is not a signature, since whoever can edit
the file can recompute it.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from fakeprobe import __version__
from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.extractor.config import ExtractorConfig
from fakeprobe.fileio import atomic_path
from fakeprobe.features.cache import SCHEMA_VERSION, CacheReader, feature_config_differences

MODEL_FORMAT = 1
#: Extractor settings that decide what a face crop is: a cache that differs in one of them is
#: refused by a model.
FACE_FIELDS = ("detector", "detect_size", "min_face_score")
#: Extractor settings that decide which frames are scored: a difference is reported, not refused.
SAMPLING_FIELDS = ("frames", "fps", "max_frames", "all_faces", "track_iou")
#: library -> the distributions that may provide it
_LIBRARIES = {"numpy": ("numpy",), "scikit-learn": ("scikit-learn",),
              "xgboost": ("xgboost", "xgboost-cpu"), "scipy": ("scipy",),
              "joblib": ("joblib",), "h5py": ("h5py",)}


class ModelIntegrityError(FakeprobeError):
    """A model file that is not whole, or not a fakeprobe model."""


def _installed(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "fakeprobe": __version__}
    for name, distributions in _LIBRARIES.items():
        versions[name] = next((v for d in distributions if (v := _installed(d))), "")
    return versions


def cache_fingerprint(cache_path: Path | str) -> dict[str, Any]:
    """What identifies a training cache: ids, labels, groups and row counts (hashed), feature
    configs and extractor config; independent of where the file lives."""
    with CacheReader(cache_path) as cache:
        videos = cache.videos()
        digest = hashlib.sha256()
        for values in zip(videos["id"], videos["label"], videos["group"], videos["status"],
                          videos["row_count"]):
            digest.update(("\x1f".join(map(str, values)) + "\n").encode())
        return {"sha256": digest.hexdigest(), "items": cache.n_videos, "rows": cache.n_rows,
                "path": str(Path(cache_path).resolve())}


@dataclass
class Model:
    pipeline: Any
    provenance: dict[str, Any]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.provenance["features"])

    @property
    def threshold(self) -> float:
        return float(self.provenance["threshold"])

    @property
    def aggregation(self) -> Aggregation:
        return Aggregation(**self.provenance["aggregation"])

    @property
    def extractor_config(self) -> ExtractorConfig:
        return ExtractorConfig.from_dict(self.provenance["extractor_config"])

    def check_cache(self, cache_path: Path | str) -> list[str]:
        """Check a cache against the training cache's extraction.

        Raises :class:`ConfigMismatch` when its features cannot mean the same thing (another
        schema, detector or detection size, or other weights or crops behind a feature set);
        returns warnings for sampling differences (frames per video, all faces), which change
        the video scores' statistics but not what a frame score means.
        """
        trained = self.extractor_config
        with CacheReader(cache_path) as cache:
            if cache.attrs["schema_version"] != self.provenance["cache_schema_version"]:
                raise ConfigMismatch(
                    f"{cache_path}: cache schema {cache.attrs['schema_version']}, the model "
                    f"was trained on schema {self.provenance['cache_schema_version']}")
            differences = trained.row_differences(cache.config)
            hard = {k: v for k, v in differences.items() if k in FACE_FIELDS}
            if hard:
                detail = ", ".join(f"{k}: model {a!r} vs cache {b!r}" for k, (a, b) in
                                   hard.items())
                raise ConfigMismatch(f"{cache_path}: faces were found otherwise than in the "
                                     f"training cache ({detail}); extract it again with the "
                                     "model's settings (see `fakeprobe info`)")
            warnings = [f"{k}: model {a!r} vs cache {b!r}" for k, (a, b) in differences.items()
                        if k in SAMPLING_FIELDS]
            stored = cache.feature_sets
            for name in self.features:
                if name not in stored:
                    raise ConfigMismatch(f"{cache_path}: no feature set {name!r}, which the "
                                         "model needs (extract it with --backbone)")
                differences = feature_config_differences(
                    self.provenance["feature_configs"][name], stored[name])
                if differences:
                    raise ConfigMismatch(
                        f"{cache_path}: feature set {name!r} differs from the one the model was "
                        f"trained on ({'; '.join(differences)}; model vs cache)")
        return warnings


def save_model(path: Path | str, pipeline: Any, provenance: dict[str, Any],
               report: dict[str, Any] | None = None) -> Path:
    """Write a model file atomically (a crash leaves the old file or none, never half).

    ``report``, when given, is stored as ``report.json``: the evaluation that came with the
    fit (per-video and per-frame scores), so ``fakeprobe report MODEL`` can draw it later."""
    path = Path(path)
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    payload = buffer.getvalue()
    meta = {**provenance, "format": MODEL_FORMAT, "pipeline_sha256":
            hashlib.sha256(payload).hexdigest(), "versions": library_versions(),
            "cache_schema_version": SCHEMA_VERSION}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("provenance.json", json.dumps(meta, indent=2, default=str))
            archive.writestr("pipeline.joblib", payload)
            if report is not None:
                archive.writestr("report.json", json.dumps(report, default=str))
    return path


def read_provenance(path: Path | str) -> dict[str, Any]:
    """The provenance of a model file, without unpickling anything."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("provenance.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelIntegrityError(f"{path}: not a fakeprobe model file ({exc})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelIntegrityError(f"{path}: model format {meta.get('format')!r}, this "
                                  f"fakeprobe reads format {MODEL_FORMAT}")
    return meta


def read_report(path: Path | str) -> dict[str, Any] | None:
    """The evaluation stored with a model (see :func:`save_model`), or None (plain JSON)."""
    path = Path(path)
    read_provenance(path)
    with zipfile.ZipFile(path) as archive:
        if "report.json" not in archive.namelist():
            return None
        try:
            return json.loads(archive.read("report.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise ModelIntegrityError(f"{path}: report.json unreadable ({exc})") from None


def load_model(path: Path | str) -> Model:
    """Check and load a model file (see the module docstring on trust)."""
    path = Path(path)
    meta = read_provenance(path)
    with zipfile.ZipFile(path) as archive:
        try:
            payload = archive.read("pipeline.joblib")
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise ModelIntegrityError(f"{path}: pipeline unreadable ({exc})") from None
    if hashlib.sha256(payload).hexdigest() != meta.get("pipeline_sha256"):
        raise ModelIntegrityError(f"{path}: the pipeline's SHA-256 does not match its "
                                  "provenance; the file is corrupt or was altered, not loading")
    return Model(joblib.load(io.BytesIO(payload)), meta)


def check_versions(model: Model) -> list[str]:
    """Lines naming the libraries whose version differs from the one the model was saved with
    (scikit-learn and xgboost pickles may not load or behave the same across versions)."""
    now = library_versions()
    then = model.provenance.get("versions", {})
    return [f"{name} {then[name]} at training, {now.get(name)} now"
            for name in ("scikit-learn", "xgboost", "numpy") if then.get(name) and
            then.get(name) != now.get(name)]


__all__ = ["Model", "ModelIntegrityError", "cache_fingerprint", "check_versions", "load_model",
           "read_provenance", "read_report", "save_model"]
