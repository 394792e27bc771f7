"""Read PyTorch checkpoint files (``.pth``) into numpy arrays, without PyTorch.

A ``.pth`` file is a pickle, and unpickling runs whatever code the pickle names. This reader
unpickles with an allow-list: only the handful of names a plain state dict refers to
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``, the ``torch.*Storage`` types,
...) resolve, each to a harmless function defined here; any other name raises
:class:`WeightsError` before anything is called. Tensors come back as C-contiguous numpy copies.

Both layouts ``torch.save`` has written are read:

* the zip layout (torch >= 1.6): ``<prefix>/data.pkl`` holds the pickle, each storage is the
  record ``<prefix>/data/<key>`` (raw little-endian bytes unless ``<prefix>/byteorder`` says
  ``big``);
* the legacy layout, one stream: a pickled magic number, a pickled protocol version (1001), a
  pickled ``sys_info`` dict (byte order), the pickle itself, a pickled list of storage keys and
  then, for each key in that order, an 8-byte element count followed by the storage's raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fakeprobe.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype. BFloat16 has no numpy dtype: it is read as uint16
# and widened to float32 (exactly: bfloat16 is the top half of a float32).
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint as ``{name: array}``, in the file's order.

    Accepts a plain state dict or a dict that holds one under ``"state_dict"`` or ``"model"``.
    Raises :class:`WeightsError` for a missing, truncated or unsupported file, or for a pickle that
    names anything beyond what a state dict needs.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            with open(path, "rb") as f:
                obj = _load_legacy(f)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, zipfile.BadZipFile) as e:
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from e
    return _as_flat_state_dict(obj, path)


# --------------------------------------------------------------------------------------------
# What the allow-listed pickle names resolve to


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a ``torch.<Name>Storage`` class: it only knows its element type."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        kind = _STORAGE_DTYPES[self.name]
        return np.dtype("uint16" if kind == "bfloat16" else kind)


@dataclass
class _Storage:
    """One storage: its element type, length in elements and, once read, its flat data."""

    type: _StorageType
    numel: int
    data: np.ndarray | None = None
    # legacy views of another storage: (root storage, offset in elements)
    view_of: tuple["_Storage", int] | None = None

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset:offset + self.numel]
        if self.data is None:
            raise WeightsError("a tensor refers to a storage whose bytes were never read")
        return self.data


@dataclass
class _LazyTensor:
    """A tensor to cut from its storage once every storage's bytes are in memory."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    meta: dict = field(default_factory=dict)

    def materialize(self) -> np.ndarray:
        if not isinstance(self.storage, _Storage):
            raise WeightsError("a tensor's storage is not a storage")
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise WeightsError(f"bad tensor geometry: size {size}, stride {stride}")
        flat = self.storage.array()
        offset = int(self.offset)
        if 0 in size:
            out = np.zeros(size, dtype=flat.dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if offset < 0 or last >= flat.shape[0]:
                raise WeightsError(
                    f"tensor of size {size}, stride {stride}, offset {offset} reaches past the end "
                    f"of its storage of {flat.shape[0]} elements"
                )
            base = np.ascontiguousarray(flat[offset:last + 1])
            view = np.lib.stride_tricks.as_strided(
                base, shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False
            )
            out = np.array(view, copy=True, order="C")
        if self.storage.type.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_TENSOR_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter")


@dataclass(frozen=True)
class _TensorType:
    """Stands in for ``torch.Tensor`` / ``torch.nn.Parameter`` in ``_rebuild_from_type_v2``."""

    name: str


def _rebuild_from_type_v2(func, new_type, args, state):
    if not isinstance(new_type, _TensorType):
        raise WeightsError("a tensor of an unsupported subclass")
    return func(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorType("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TensorType("torch.nn.parameter.Parameter"),
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed names; storages come from ``storage_for``."""

    def __init__(self, file: BinaryIO, storage_for=None) -> None:
        super().__init__(file)
        self._storage_for = storage_for

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(
                f"the checkpoint's pickle refers to {module}.{name}, which a plain state dict "
                "never needs; refusing to load it"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_for is None:
            raise WeightsError("unexpected persistent id in a checkpoint header")
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise WeightsError(f"unsupported persistent id {kind!r} (only storages are read)")
        return self._storage_for(pid)


# --------------------------------------------------------------------------------------------
# The two file layouts


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise WeightsError(f"expected one data.pkl in the zip, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
        storages: dict[str, _Storage] = {}

        def storage_for(pid: tuple) -> _Storage:
            _, storage_type, key, _location, numel = pid[:5]
            if not isinstance(storage_type, _StorageType):
                raise WeightsError("a storage of an unknown type")
            key = str(key)
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise WeightsError(f"missing storage record {record}")
                raw = zf.read(record)
                storages[key] = _Storage(storage_type, int(numel),
                                         _flat(raw, storage_type, int(numel), byteorder))
            return storages[key]

        obj = _RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), storage_for).load()
    return _materialize(obj)


def _load_legacy(f: BinaryIO) -> Any:
    head = f.read(2)
    f.seek(0)
    if len(head) < 2 or head[0] != 0x80:  # PROTO opcode: every torch pickle starts with it
        raise WeightsError("neither a zip nor a legacy PyTorch checkpoint")
    magic = _RestrictedUnpickler(f).load()
    if magic != LEGACY_MAGIC:
        raise WeightsError("not a PyTorch checkpoint (wrong magic number; tar checkpoints from "
                           "torch < 0.4 are not supported)")
    protocol = _RestrictedUnpickler(f).load()
    if protocol != LEGACY_PROTOCOL:
        raise WeightsError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _RestrictedUnpickler(f).load()
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) \
        else "big"

    storages: dict[str, _Storage] = {}

    def storage_for(pid: tuple) -> _Storage:
        _, storage_type, root_key, _location, numel, view_metadata = pid[:6]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError("a storage of an unknown type")
        root_key = str(root_key)
        if root_key not in storages:
            storages[root_key] = _Storage(storage_type, int(numel))
        root = storages[root_key]
        if view_metadata is None:
            return root
        view_key, offset, view_size = view_metadata
        view_key = str(view_key)
        if view_key not in storages:
            storages[view_key] = _Storage(storage_type, int(view_size), view_of=(root, int(offset)))
        return storages[view_key]

    obj = _RestrictedUnpickler(f, storage_for).load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list):
        raise WeightsError("the legacy storage key list is not a list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.view_of is not None:
            raise WeightsError(f"storage key {key!r} is listed but never referenced")
        (count,) = struct.unpack("<q" if byteorder == "little" else ">q", _read_exact(f, 8))
        if count != storage.numel:
            raise WeightsError(f"storage {key!r} holds {count} elements, expected {storage.numel}")
        raw = _read_exact(f, count * storage.type.dtype.itemsize)
        storage.data = _flat(raw, storage.type, count, byteorder)
    return _materialize(obj)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise WeightsError(f"truncated checkpoint: wanted {n} bytes, got {len(data)}")
    return data


def _flat(raw: bytes, storage_type: _StorageType, numel: int, byteorder: str) -> np.ndarray:
    dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
    need = numel * dtype.itemsize
    if len(raw) < need:
        raise WeightsError(f"a storage holds {len(raw)} bytes, expected {need}")
    return np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))


def _materialize(obj: Any) -> Any:
    """Replace every :class:`_LazyTensor` in dicts, lists and tuples by its numpy array."""
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        out = type(obj)((k, _materialize(v)) for k, v in obj.items())
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _as_flat_state_dict(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise WeightsError(f"{path}: the checkpoint holds no state dict of tensors")
    return dict(obj)
