"""PyTorch checkpoints read without PyTorch, without running any code from the file, and never beyond its bytes.

Both the legacy format (PyTorch < 1.6, e.g. the L2T-ww authors' `model_best.pth.tar`: a sequence of pickles,
then raw storages) and the zip format (`data.pkl` + one file per storage) are parsed with NumPy and restricted
unpicklers: no pickle of the file can import a function (the usual way a pickle runs code), every class it
names outside a short list of tensor pieces becomes an inert placeholder.

Nothing is trusted before it is checked: pickles are read by Python's own unpickler (no memo index can make it
allocate), each storage must hold exactly the bytes its header declares, and each tensor's offset, shape and
strides must address only elements inside its storage before an array is made. A truncated, damaged or
malformed file raises `CheckpointError`, which names the file.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_l2t.networks.weights import WeightsError

__all__ = ["CheckpointError", "read_torch_checkpoint"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
ZIP_MAGIC = b"PK\x03\x04"
MAX_DIMENSIONS = 32
TORCH_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
# what malformed bytes can raise from pickle, pickletools, zipfile and NumPy; turned into a CheckpointError
PARSE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    StopIteration,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)


class CheckpointError(WeightsError):
    """A PyTorch checkpoint that is truncated, damaged or malformed (the message names the file and the fault)."""

    reason = ""  # the fault alone, without the file's name


ADVICE = "The file may be truncated or damaged; download or copy it again."


class _Malformed(ValueError):
    """A fault found inside the file, before its name is added."""


def _refuse_buffer(unpickler) -> None:
    raise _Malformed("the checkpoint holds a protocol-5 buffer (a byte array of any size), which no torch.save writes")


class SafeUnpickler(pickle._Unpickler):
    """Python's own unpickler, which allocates no more than the file holds.

    Not the C one: its memo is an array sized by the largest memo index it meets, so that one crafted index
    allocates (and clears) gigabytes. Protocol 5's BYTEARRAY8 allocates the size it states before reading it.
    """

    dispatch = pickle._Unpickler.dispatch | {pickle.BYTEARRAY8[0]: _refuse_buffer}


@dataclasses.dataclass(frozen=True)
class _StorageView:
    key: str
    dtype: np.dtype
    start: int  # in elements, from the start of the storage
    count: int  # elements this view may address


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageView
    offset: int
    size: tuple
    stride: tuple


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(TORCH_STORAGE_DTYPES[name])


class _Opaque:
    """Stands in for any class in a checkpoint that we do not need (optimizer state, argparse...)."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rebuild_tensor(storage, offset, size, stride, *unused):
    size, stride = tuple(size), tuple(stride)
    if not isinstance(storage, _StorageView):
        raise _Malformed("a tensor refers to something that is not a storage")
    numbers = (offset, *size, *stride)
    if len(size) != len(stride) or len(size) > MAX_DIMENSIONS or not all(map(_is_count, numbers)):
        raise _Malformed(f"a tensor has an invalid offset {offset!r:.40}, shape {size!r:.80} or strides {stride!r:.80}")
    return _LazyTensor(storage, offset, size, stride)


class _CheckpointUnpickler(SafeUnpickler):
    def __init__(self, handle):
        super().__init__(handle)
        self.storages: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, elements) as the pickle declares

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name == "Size":
            return tuple
        return _Opaque

    def persistent_load(self, saved_id):
        """A storage reference: ('storage', type, key, location, elements[, legacy view (key, offset, size)])."""
        if not isinstance(saved_id, tuple) or len(saved_id) < 5 or saved_id[0] != "storage":
            raise _Malformed(f"unsupported object in the checkpoint: {saved_id!r:.80}")
        storage_type, key, count = saved_id[1], saved_id[2], saved_id[4]
        if not isinstance(storage_type, _StorageType):
            raise _Malformed(f"unsupported storage type {storage_type!r:.80}")
        if not isinstance(key, str) or not _is_count(count):
            raise _Malformed(f"a storage has an invalid key {key!r:.40} or size {count!r:.40}")
        if self.storages.setdefault(key, (storage_type.dtype, count)) != (storage_type.dtype, count):
            raise _Malformed(f"storage {key!r} is declared twice with different types or sizes")
        view = saved_id[5] if len(saved_id) > 5 else None
        if view is None:
            return _StorageView(key, storage_type.dtype, 0, count)
        if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1]) and _is_count(view[2])):
            raise _Malformed(f"storage {key!r} has an invalid view {view!r:.80}")
        if view[1] + view[2] > count:
            raise _Malformed(f"a view of storage {key!r} ends at element {view[1] + view[2]}, it holds {count}")
        return _StorageView(key, storage_type.dtype, view[1], view[2])


class _PlainUnpickler(SafeUnpickler):
    """Numbers, strings, lists, tuples and dicts only: the legacy format's header pickles hold nothing else."""

    def find_class(self, module, name):
        raise _Malformed(f"refusing to load {module}.{name} from a checkpoint header (it may run code)")


def _load(unpickler_type, handle: io.BytesIO):
    unpickler = unpickler_type(handle)
    return unpickler.load(), unpickler


def _storage_array(key: str, data: memoryview, dtype: np.dtype) -> np.ndarray:
    """A storage's bytes, copied once out of the file: the arrays of its tensors are views of it."""
    array = np.frombuffer(data, np.uint8).copy()
    if dtype == np.bool_ and array.size and array.max() > 1:  # NumPy booleans must be 0 or 1
        raise _Malformed(f"boolean storage {key!r} holds bytes other than 0 and 1")
    return array


def _check_within(tensor: _LazyTensor, storage_bytes: int) -> None:
    """Refuse a tensor that would address any byte outside its storage (or outside its legacy storage view)."""
    view, itemsize = tensor.storage, tensor.storage.dtype.itemsize
    if (view.start + view.count) * itemsize > storage_bytes:
        raise _Malformed(f"a view of storage {view.key!r} ends beyond the storage's {storage_bytes} bytes")
    elements = math.prod(tensor.size)
    last = tensor.offset + sum((size - 1) * stride for size, stride in zip(tensor.size, tensor.stride, strict=True))
    beyond = last >= view.count if elements else tensor.offset > view.count
    if beyond or elements > view.count:
        raise _Malformed(
            f"a tensor of shape {tensor.size} (offset {tensor.offset}, strides {tensor.stride}) needs elements "
            f"up to {last + 1} ({elements} in all) of storage {view.key!r}, which holds {view.count}"
        )


def _materialise(value, storages: dict[str, np.ndarray]):
    if isinstance(value, _LazyTensor):
        root = storages[value.storage.key]
        _check_within(value, root.nbytes)
        itemsize = value.storage.dtype.itemsize
        offset = (value.storage.start + value.offset) * itemsize
        strides = tuple(step * itemsize for step in value.stride)
        return np.ndarray(value.size, value.storage.dtype, buffer=root, offset=offset, strides=strides)
    if isinstance(value, dict):
        return collections.OrderedDict((k, _materialise(v, storages)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v, storages) for v in value)
    return value


def _read_legacy_checkpoint(data: bytes) -> object:
    handle = io.BytesIO(data)
    if _load(_PlainUnpickler, handle)[0] != LEGACY_MAGIC_NUMBER:
        raise _Malformed("not a PyTorch checkpoint (wrong magic number)")
    if _load(_PlainUnpickler, handle)[0] != LEGACY_PROTOCOL_VERSION:
        raise _Malformed(f"not a legacy PyTorch checkpoint of protocol {LEGACY_PROTOCOL_VERSION}")
    system = _load(_PlainUnpickler, handle)[0]
    if not isinstance(system, dict) or system.get("little_endian") is not True:
        raise _Malformed("its header does not say little-endian (only little-endian checkpoints are read)")
    result, unpickler = _load(_CheckpointUnpickler, handle)
    keys = _load(_PlainUnpickler, handle)[0]
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(unpickler.storages):
        raise _Malformed("its list of storages differs from the storages its tensors use")
    return _materialise(result, _legacy_storages(data, handle.tell(), keys, unpickler.storages))


def _legacy_storages(data: bytes, position: int, keys: list, declared: dict) -> dict[str, np.ndarray]:
    """The storages after the legacy pickles: each an 8-byte element count, then its bytes, all inside the file."""
    storages, view = {}, memoryview(data)
    for key in keys:
        dtype, expected = declared[key]
        if position + 8 > len(data):
            raise _Malformed(f"the file ends before storage {key!r}: it is truncated")
        count = int.from_bytes(data[position : position + 8], "little", signed=True)
        if count != expected:
            raise _Malformed(f"storage {key!r} says it holds {count} elements, its tensors' header says {expected}")
        start, end = position + 8, position + 8 + count * dtype.itemsize
        if end > len(data):
            raise _Malformed(f"the file ends inside storage {key!r} ({len(data) - start} of {end - start} bytes)")
        storages[key], position = _storage_array(key, view[start:end], dtype), end
    return storages


def _read_zip_checkpoint(data: bytes) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickle_names = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if not pickle_names:
            raise _Malformed("a zip file without data.pkl is not a PyTorch checkpoint")
        root = pickle_names[0][: -len("data.pkl")]
        result, unpickler = _load(_CheckpointUnpickler, io.BytesIO(archive.read(pickle_names[0])))
        storages = {}
        for key, (dtype, count) in unpickler.storages.items():
            try:
                entry = archive.getinfo(f"{root}data/{key}")
            except KeyError:
                raise _Malformed(f"storage {key!r} is missing from the archive") from None
            if entry.file_size != count * dtype.itemsize:  # checked before anything is read or decompressed
                raise _Malformed(f"storage {key!r} has {entry.file_size} bytes, not {count} elements")
            storages[key] = _storage_array(key, memoryview(archive.read(entry)), dtype)
    return _materialise(result, storages)


def read_torch_checkpoint(path: str | os.PathLike) -> object:
    """Read a PyTorch checkpoint (`torch.save` output, legacy or zip format) into NumPy arrays.

    Every tensor is checked against its storage first; tensors sharing a storage share memory, as in PyTorch.
    A tensor whose strides repeat elements (more elements than its storage holds) is refused.

    Args:
        path: the `.pth` / `.pth.tar` / `.pt` file.

    Returns:
        The saved object with every tensor replaced by a `numpy.ndarray`.

    Raises:
        CheckpointError: a truncated, damaged or malformed file (names the file and what is wrong).

    """
    path = Path(path)
    data = path.read_bytes()
    try:
        if data.startswith(ZIP_MAGIC):  # as PyTorch tells its formats apart: a legacy file starts with a pickle
            return _read_zip_checkpoint(data)
        return _read_legacy_checkpoint(data)
    except PARSE_ERRORS as error:
        kind = f"{type(error).__module__.replace('builtins', '').lstrip('_')}.{type(error).__name__}".lstrip(".")
        detail = f"{kind}: {error}" if str(error) else kind
        reason = str(error) if isinstance(error, _Malformed) else f"its data is cut short or damaged ({detail})"
        refusal = CheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason[:300]}. {ADVICE}")
        refusal.reason = reason[:300]
        raise refusal from error
