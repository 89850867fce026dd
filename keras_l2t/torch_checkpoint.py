"""PyTorch checkpoints read without PyTorch, and without running any code from the file.

Both the legacy format (PyTorch < 1.6, e.g. the L2T-ww authors' `model_best.pth.tar`: a sequence of pickles,
then raw storages) and the zip format (`data.pkl` + one file per storage) are parsed with NumPy and restricted
unpicklers: no pickle of the file can import a function (the usual way a pickle runs code), every class it
names outside a short list of tensor pieces becomes an inert placeholder.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from keras_l2t.weights import WeightsError

__all__ = ["read_torch_checkpoint"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _LazyTensor:
    storage_key: str
    dtype: type
    offset: int
    size: tuple
    stride: tuple


class _StorageType:
    def __init__(self, name: str):
        self.dtype = TORCH_STORAGE_DTYPES[name]


class _Opaque:
    """Stands in for any class in a checkpoint that we do not need (optimizer state, argparse...)."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, *unused):
    key, dtype = storage
    return _LazyTensor(key, dtype, offset, tuple(size), tuple(stride))


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, handle):
        super().__init__(handle)
        self.storage_dtypes: dict[str, np.dtype] = {}

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
        kind, storage_type, key = saved_id[0], saved_id[1], saved_id[2]
        if kind != "storage":
            raise WeightsError(f"unsupported object in PyTorch checkpoint: {kind!r}")
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.dtype(storage_type)
        self.storage_dtypes[str(key)] = np.dtype(dtype)
        return (str(key), dtype)


def _materialise(value, storages: dict):
    if isinstance(value, _LazyTensor):
        flat = storages[value.storage_key].view(value.dtype)
        itemsize = flat.itemsize
        strides = tuple(step * itemsize for step in value.stride)
        view = np.lib.stride_tricks.as_strided(flat[value.offset :], value.size, strides)
        return np.array(view)
    if isinstance(value, dict):
        return collections.OrderedDict((k, _materialise(v, storages)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v, storages) for v in value)
    return value


class _PlainUnpickler(pickle.Unpickler):
    """Numbers, strings, lists, tuples and dicts only: the legacy format's header pickles hold nothing else."""

    def find_class(self, module, name):
        raise WeightsError(f"refusing to load {module}.{name} from a checkpoint header (it may run code)")


def _plain(handle) -> object:
    return _PlainUnpickler(handle).load()


def _read_legacy_checkpoint(handle) -> object:
    if _plain(handle) != LEGACY_MAGIC_NUMBER:
        raise WeightsError("not a PyTorch checkpoint (wrong magic number)")
    _plain(handle)  # protocol version
    _plain(handle)  # system information
    unpickler = _CheckpointUnpickler(handle)
    result = unpickler.load()
    storages = {}
    for key in _plain(handle):
        count = int(np.frombuffer(handle.read(8), "<i8")[0])
        storages[key] = np.frombuffer(handle.read(count * unpickler.storage_dtypes[key].itemsize), np.uint8)
    return _materialise(result, storages)


def _read_zip_checkpoint(path: Path) -> object:
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        root = pickle_name[: -len("data.pkl")]
        with archive.open(pickle_name) as handle:
            unpickler = _CheckpointUnpickler(handle)
            result = unpickler.load()
        keys = unpickler.storage_dtypes
        storages = {key: np.frombuffer(archive.read(f"{root}data/{key}"), np.uint8) for key in keys}
    return _materialise(result, storages)


def read_torch_checkpoint(path: str | os.PathLike) -> object:
    """Read a PyTorch checkpoint (`torch.save` output, legacy or zip format) into NumPy arrays.

    Args:
        path: the `.pth` / `.pth.tar` / `.pt` file.

    Returns:
        The saved object with every tensor replaced by a `numpy.ndarray`.

    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _read_zip_checkpoint(path)
    with open(path, "rb") as handle:
        return _read_legacy_checkpoint(handle)
