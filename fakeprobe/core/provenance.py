"""The one collector of library versions and machine facts, for model files, run records and
benchmarks."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from fakeprobe import __version__

#: The libraries a model file records, each under the distributions that provide it.
MODEL_LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",), "scikit-learn": ("scikit-learn",),
    "xgboost": ("xgboost", "xgboost-cpu"), "scipy": ("scipy",), "skops": ("skops",),
    "h5py": ("h5py",)}
#: What a network (a fine-tuned backbone, a temporal head) adds.
NETWORK_LIBRARIES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",)}
#: What a run record and a benchmark record.
RUN_LIBRARIES: dict[str, tuple[str, ...]] = {
    **MODEL_LIBRARIES, **NETWORK_LIBRARIES,
    "opencv-python-headless": ("opencv-python-headless",), "matplotlib": ("matplotlib",),
    "joblib": ("joblib",)}


def installed(*distributions: str) -> str:
    """The version of the first of ``distributions`` that is installed, or ``""``."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def library_versions(libraries: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """Python's, fakeprobe's and each library's version (``""`` when not installed);
    ``libraries`` defaults to :data:`MODEL_LIBRARIES`."""
    versions = {"python": platform.python_version(), "fakeprobe": __version__}
    for name, distributions in (MODEL_LIBRARIES if libraries is None else libraries).items():
        versions[name] = installed(*distributions)
    return versions


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(libraries: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """The machine and the versions of ``libraries`` (default :data:`RUN_LIBRARIES`, those
    installed), for run records and benchmarks."""
    import psutil

    versions = library_versions(RUN_LIBRARIES if libraries is None else libraries)
    return {
        "platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "versions": {name: v for name, v in versions.items() if v},
    }
