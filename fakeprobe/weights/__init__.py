"""Weights and models that fakeprobe trains itself and ships inside the package.

* ``forensic-v2.npz``: the ``forensic`` face encoder (see
  :mod:`fakeprobe.extractor.backbones.forensic`), plain arrays read without pickle;
* ``forensic-v2.onnx``: the same network converted for ONNX Runtime, which runs it without
  TensorFlow (used only as long as it matches ``forensic-v2.npz``: see the model card);
* ``forensic-detector-v2.fpm``: the bundled detector, a head fitted on that encoder's features,
  which ``fakeprobe predict`` uses when no ``--model`` is given;
* ``FORENSIC_CARD.md``: the model card of both (data and its terms, recipe, measured numbers
  with their commands, known limits).

Each file's SHA-256 is pinned here or in the backbone's module and checked on every load, so a
corrupt or replaced file is refused, never silently used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fakeprobe.core.checksums import verify_sha256
from fakeprobe.errors import WeightsError

#: The bundled detector's file and the name outputs give it.
BUNDLED_MODEL_FILE = "forensic-detector-v2.fpm"
BUNDLED_MODEL_NAME = "fakeprobe forensic-detector-v2 (logreg on forensic)"
MODEL_CARD = "FORENSIC_CARD.md"
#: ``sha256sum`` format: the SHA-256 of every shipped file, written by the recipe
#: (``benchmarks/forensic_encoder.py --export``) with the files it measured.
CHECKSUMS = "SHA256SUMS"


def weights_dir() -> Path:
    return Path(str(resources.files(__name__)))


def pinned_sha256(name: str) -> str:
    """The SHA-256 that :data:`CHECKSUMS` pins for the shipped file ``name``."""
    path = weights_dir() / CHECKSUMS
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read {path} ({exc}): reinstall fakeprobe") from None
    for line in lines:
        digest, _, file = line.strip().partition("  ")
        if file == name:
            return digest
    raise WeightsError(f"{path} pins no checksum for {name}: reinstall fakeprobe")


def verified(name: str, what: str) -> Path:
    """The shipped file ``name`` after checking it against its pinned SHA-256."""
    path = weights_dir() / name
    if not path.is_file():
        raise WeightsError(f"{what} is missing ({path}): reinstall fakeprobe")
    verify_sha256(path, pinned_sha256(name), what=what, remedy="reinstall fakeprobe")
    return path


def bundled_model_path() -> Path:
    """The bundled detector's model file, checked against its pinned SHA-256."""
    return verified(BUNDLED_MODEL_FILE, "the bundled detector")
