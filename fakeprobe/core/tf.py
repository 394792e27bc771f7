"""TensorFlow, imported only when a network is needed, and the device it runs on."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from fakeprobe.errors import FakeprobeError

DEVICES = ("auto", "cpu", "gpu")


def import_tensorflow() -> Any:
    """Import TensorFlow with its C++ start-up chatter silenced.

    Recent TensorFlow logs through absl before ``TF_CPP_MIN_LOG_LEVEL`` is read, straight to
    file descriptor 2, which would garble progress bars; the first import therefore runs with
    descriptor 2 sent to a temporary file, replayed if the import fails. Set
    ``FAKEPROBE_TF_LOGS=1`` to see everything.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("FAKEPROBE_TF_LOGS"):
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def check_device(device: str) -> str:
    """``device`` when it is one of :data:`DEVICES`, else :class:`FakeprobeError`."""
    if device not in DEVICES:
        raise FakeprobeError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    return device


def resolve_device(device: str = "auto") -> str:
    """A TensorFlow device string for ``auto`` (GPU when present), ``cpu`` or ``gpu``."""
    check_device(device)
    if device == "cpu":
        return "/CPU:0"
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: growth cannot change any more
                pass
        return "/GPU:0"
    if device == "gpu":
        raise FakeprobeError("--device gpu was asked for but TensorFlow sees no GPU")
    return "/CPU:0"
