"""Model files: the fitted pipeline with its provenance, checked on load. Data, not code.

A model file is a zip archive holding ``provenance.json`` (plain JSON: feature sets and their
backbone configs, extractor config, cache schema version, library versions, aggregation,
threshold, CV scores, the training cache's fingerprint, and the SHA-256 of the pipeline),
``pipeline.skops`` (the fitted scikit-learn pipeline in the ``skops.io`` format) and, when the
fit evaluated the model, ``report.json``.

**Loading a model file runs no code from it.** ``skops.io`` stores a pipeline as a JSON schema of
objects and numpy arrays, and rebuilds only the types it is told to trust: scikit-learn's own
(skops' defaults) and the few others fakeprobe itself writes (:data:`TRUSTED_TYPES`: fakeprobe's
SVM heads, XGBoost's classifier and booster, whose trees are XGBoost's own binary format,
imbalanced-learn's SMOTE pipeline). A file naming any other type is refused before anything is
built. Before reading, the archive's declared sizes are checked against limits (a small zip that
would inflate to gigabytes is refused without inflating it), the JSON is checked, then the
pipeline's SHA-256 (corruption, careless edits; not a signature). Model files of format 1 held a
pickle, which runs code when loaded: their JSON still reads, their pipeline never loads (fit
the model again).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.provenance import library_versions
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.features.cache import (SCHEMA_VERSION, CacheReader, compatible_versions,
                                      feature_config_differences)
from fakeprobe.fileio import atomic_path

#: 2: the pipeline in the skops format (1: a joblib pickle, no longer read).
MODEL_FORMAT = 2
#: The member holding the pipeline.
PIPELINE_MEMBER = "pipeline.skops"
#: Types beyond skops' defaults (scikit-learn's own estimators, numpy, scipy) that a model
#: file may hold: exactly the classes fakeprobe's heads put in a pipeline. Nothing else loads.
TRUSTED_TYPES = frozenset({
    "fakeprobe.classifiers.heads.AutoSVC",
    "fakeprobe.classifiers.heads.NystroemSVC",
    "fakeprobe.classifiers.sequence.SequenceGRU",
    "fakeprobe.classifiers.ensemble.StackedHeads",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.core.Booster",
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._smote.base.SMOTE",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
})
#: Limits checked before anything is read: the file, any one member once inflated (declared
#: size), and all members together. An SVM on 5,000 frames of 1280-d features is about 60 MB.
MAX_MODEL_FILE_BYTES = 1 << 30
MAX_MEMBER_BYTES = 512 << 20
MAX_TOTAL_BYTES = 768 << 20
#: Extractor settings that decide what a face crop is: a cache that differs in one of them is
#: refused by a model.
FACE_FIELDS = ("detector", "detect_size", "min_face_score")
#: Extractor settings that decide which frames are scored: a difference is reported, not refused.
SAMPLING_FIELDS = ("frames", "fps", "max_frames", "all_faces", "track_iou")


class ModelIntegrityError(FakeprobeError):
    """A model file that is not whole, or not a fakeprobe model."""


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
            trained_on = compatible_versions(self.provenance["cache_schema_version"])
            if cache.attrs["schema_version"] not in trained_on:
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


def _dump(pipeline: Any) -> bytes:
    import skops.io as sio

    payload = sio.dumps(pipeline)
    foreign = set(sio.get_untrusted_types(data=payload)) - TRUSTED_TYPES
    if foreign:
        raise ModelIntegrityError(
            f"cannot save a pipeline holding {', '.join(sorted(foreign))}: a model file may "
            "hold only the types fakeprobe trusts on loading (model.TRUSTED_TYPES)")
    return payload


def save_model(path: Path | str, pipeline: Any, provenance: dict[str, Any],
               report: dict[str, Any] | None = None) -> Path:
    """Write a model file atomically (a crash leaves the old file or none, never half).

    ``report``, when given, is stored as ``report.json``: the evaluation that came with the
    fit (per-video and per-frame scores), so ``fakeprobe report MODEL`` can draw it later."""
    path = Path(path)
    payload = _dump(pipeline)
    meta = {**provenance, "format": MODEL_FORMAT, "pipeline_sha256":
            hashlib.sha256(payload).hexdigest(), "versions": library_versions(),
            "cache_schema_version": SCHEMA_VERSION}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("provenance.json", json.dumps(meta, indent=2, default=str))
            archive.writestr(PIPELINE_MEMBER, payload)
            if report is not None:
                archive.writestr("report.json", json.dumps(report, default=str))
    return path


def _check_sizes(archive: zipfile.ZipFile, where: str) -> None:
    """Refuse an archive whose members would inflate beyond the limits, from the sizes its
    directory declares (reading a member never yields more than its declared size)."""
    total = 0
    for info in archive.infolist():
        if info.file_size > MAX_MEMBER_BYTES:
            raise ModelIntegrityError(
                f"{where}: member {info.filename!r} would inflate to {info.file_size:,} bytes "
                f"(limit {MAX_MEMBER_BYTES:,}); refused without reading it")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise ModelIntegrityError(f"{where}: its members would inflate to {total:,} bytes "
                                  f"(limit {MAX_TOTAL_BYTES:,}); refused without reading them")


def _open(path: Path) -> zipfile.ZipFile:
    """The model file's archive, after the size checks."""
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_FILE_BYTES:
            raise ModelIntegrityError(f"{path}: {size:,} bytes, more than a model file holds "
                                      f"(limit {MAX_MODEL_FILE_BYTES:,})")
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelIntegrityError(f"{path}: not a fakeprobe model file ({exc})") from None
    try:
        _check_sizes(archive, str(path))
    except ModelIntegrityError:
        archive.close()
        raise
    return archive


def _read(archive: zipfile.ZipFile, member: str, path: Path) -> bytes:
    try:
        return archive.read(member)
    except KeyError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
            RuntimeError) as exc:
        raise ModelIntegrityError(f"{path}: {member} unreadable ({exc})") from None


#: Formats whose JSON (provenance, stored evaluation) is read; only MODEL_FORMAT's pipeline is.
READABLE_FORMATS = (1, MODEL_FORMAT)


def read_provenance(path: Path | str) -> dict[str, Any]:
    """The provenance of a model file (nothing but JSON is read, so a format-1 file's is read
    too: ``fakeprobe report OLD.fpm`` still draws its stored evaluation)."""
    path = Path(path)
    try:
        with _open(path) as archive:
            meta = json.loads(_read(archive, "provenance.json", path))
    except (KeyError, ValueError) as exc:
        raise ModelIntegrityError(f"{path}: not a fakeprobe model file ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelIntegrityError(f"{path}: not a fakeprobe model file (provenance.json "
                                  "holds no object)")
    if meta.get("format") not in READABLE_FORMATS:
        raise ModelIntegrityError(f"{path}: model format {meta.get('format')!r}, this "
                                  f"fakeprobe reads format {MODEL_FORMAT}")
    return meta


def read_report(path: Path | str) -> dict[str, Any] | None:
    """The evaluation stored with a model (see :func:`save_model`), or None (plain JSON)."""
    path = Path(path)
    read_provenance(path)
    with _open(path) as archive:
        if "report.json" not in archive.namelist():
            return None
        try:
            return json.loads(_read(archive, "report.json", path))
        except ValueError as exc:
            raise ModelIntegrityError(f"{path}: report.json unreadable ({exc})") from None


def _load_pipeline(payload: bytes, path: Path) -> Any:
    """Rebuild the pipeline from skops data, trusting only :data:`TRUSTED_TYPES` beyond skops'
    defaults; anything else is refused before a single object is built."""
    import skops.io as sio

    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as inner:
            _check_sizes(inner, f"{path}: {PIPELINE_MEMBER}")
        untrusted = set(sio.get_untrusted_types(data=payload))
    except ModelIntegrityError:
        raise
    except Exception as exc:  # skops and zipfile raise many types for a damaged file
        raise ModelIntegrityError(f"{path}: {PIPELINE_MEMBER} is not a skops file "
                                  f"({exc.__class__.__name__}: {exc})") from None
    foreign = untrusted - TRUSTED_TYPES
    if foreign:
        raise ModelIntegrityError(
            f"{path}: the pipeline names types fakeprobe never writes "
            f"({', '.join(sorted(foreign))}); refused without loading anything")
    try:
        return sio.loads(payload, trusted=sorted(untrusted))
    except Exception as exc:  # a damaged file fails in as many ways as skops has loaders
        raise ModelIntegrityError(f"{path}: the pipeline does not load "
                                  f"({exc.__class__.__name__}: {exc})") from None


def load_model(path: Path | str) -> Model:
    """Check and load a model file (sizes, JSON, checksum, then only trusted types)."""
    path = Path(path)
    meta = read_provenance(path)
    if meta["format"] == 1:
        raise ModelIntegrityError(
            f"{path}: a model file of format 1, which holds a pickle (loading one runs code); "
            f"this fakeprobe loads only format {MODEL_FORMAT} (data, no code): fit the model "
            "again")
    with _open(path) as archive:
        try:
            payload = _read(archive, PIPELINE_MEMBER, path)
        except KeyError:
            raise ModelIntegrityError(f"{path}: no {PIPELINE_MEMBER} in the file") from None
    if hashlib.sha256(payload).hexdigest() != meta.get("pipeline_sha256"):
        raise ModelIntegrityError(f"{path}: the pipeline's SHA-256 does not match its "
                                  "provenance; the file is corrupt or was altered, not loading")
    return Model(_load_pipeline(payload, path), meta)


def check_versions(model: Model) -> list[str]:
    """Lines naming the libraries whose version differs from the one the model was saved with
    (scikit-learn and xgboost models may not load or behave the same across versions)."""
    now = library_versions()
    then = model.provenance.get("versions", {})
    return [f"{name} {then[name]} at training, {now.get(name)} now"
            for name in ("scikit-learn", "xgboost", "numpy") if then.get(name) and
            then.get(name) != now.get(name)]


def bundled_model_info() -> dict:
    """What the bundled detector is (name, head, features, threshold, card), read from its
    provenance without loading the pipeline; ``{"error": ...}`` when it cannot be used."""
    from fakeprobe.weights import (BUNDLED_MODEL_FILE, BUNDLED_MODEL_NAME, MODEL_CARD,
                                   bundled_model_path, weights_dir)

    try:
        meta = read_provenance(bundled_model_path())
    except FakeprobeError as exc:
        return {"name": BUNDLED_MODEL_NAME, "error": str(exc)}
    return {"name": BUNDLED_MODEL_NAME, "file": str(weights_dir() / BUNDLED_MODEL_FILE),
            "head": meta.get("head"), "features": list(meta.get("features", [])),
            "threshold": float(meta.get("threshold", float("nan"))),
            "card": str(weights_dir() / MODEL_CARD)}


__all__ = ["MODEL_FORMAT", "Model", "ModelIntegrityError", "TRUSTED_TYPES", "bundled_model_info",
           "cache_fingerprint", "check_versions", "load_model", "read_provenance", "read_report",
           "save_model"]
