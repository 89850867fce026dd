"""Pretrained weights: download and cache, PyTorch checkpoints and rcmalli SqueezeNet files to Keras.

PyTorch checkpoints are read without PyTorch: both the legacy pickle format (PyTorch < 1.6, e.g. the
L2T-ww authors' `model_best.pth.tar`) and the zip format are parsed with `pickle` and NumPy.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
from keras.src.utils.naming import to_snake_case  # the names Keras 3 gives layers in weights files

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
BATCH_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


class WeightsError(ValueError):
    """A weights file that does not fit the architecture it is loaded into."""


class WeightsUnavailableError(RuntimeError):
    """Named pretrained weights that cannot be downloaded (for example when offline)."""


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a backbone's named pretrained weights come from.

    Args:
        url: the official download address.
        file_name: the name of the cached file.
        sha256: the file's SHA-256, checked after download (None to skip).
        description: what the weights were trained on, and their licence.

    """

    url: str
    file_name: str
    sha256: str | None
    description: str


def keras_cache_path(file_name: str) -> str:
    """Where Keras caches a downloaded weights file (`$KERAS_HOME/models`, by default `~/.keras/models`).

    Args:
        file_name: the file's name.

    Returns:
        The full path.

    """
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models", file_name)


MIRROR_VARIABLE = "KERAS_L2T_WEIGHTS_DIR"


def offline_hint(backbone: str, source: WeightSource, error: Exception) -> str:
    """The message for named weights that could not be downloaded.

    Args:
        backbone: the backbone's name.
        source: where the weights come from.
        error: the download error.

    Returns:
        A message that says how to pass a local file instead.

    """
    return (
        f"Could not download the pretrained weights of {backbone!r} from {source.url} ({error}). "
        f"If this machine is offline, download the file elsewhere and pass its local path instead, "
        f"e.g. weights='/path/to/{source.file_name}', copy it to {keras_cache_path(source.file_name)}, or list "
        f"its folder in the {MIRROR_VARIABLE} environment variable."
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_in_mirror(source: WeightSource) -> str | None:
    """Find a named weights file in the local folders listed in `$KERAS_L2T_WEIGHTS_DIR` (os.pathsep-separated).

    A file matches by its name (then its checksum must agree) or, when the source has a SHA-256, by content
    under any name: an offline machine can point the variable at a folder of already downloaded weights.

    Args:
        source: the file's name and checksum.

    Returns:
        The path of the matching file, or None.

    Raises:
        WeightsError: a file of the right name whose checksum differs.

    """
    for folder in filter(None, os.environ.get(MIRROR_VARIABLE, "").split(os.pathsep)):
        named = os.path.join(folder, source.file_name)
        if os.path.isfile(named):
            if source.sha256 and _sha256(named) != source.sha256:
                raise WeightsError(f"{named} does not have the expected SHA-256 {source.sha256}.")
            return named
        if source.sha256 and os.path.isdir(folder):
            for entry in sorted(os.scandir(folder), key=lambda item: item.name):
                if entry.is_file() and _sha256(entry.path) == source.sha256:
                    return entry.path
    return None


def download(source: WeightSource, backbone: str) -> str:
    """Find a named weights file in the local mirror (`find_in_mirror`), or download it into the Keras cache.

    Args:
        source: the file's address, name and checksum.
        backbone: the backbone's name, for error messages.

    Returns:
        The local path of the file.

    """
    mirrored = find_in_mirror(source)
    if mirrored:
        return mirrored
    try:
        return keras.utils.get_file(source.file_name, source.url, file_hash=source.sha256, cache_subdir="models")
    except Exception as error:  # keras raises a bare Exception on a failed fetch
        raise WeightsUnavailableError(offline_hint(backbone, source, error)) from error


# ---------------------------------------------------------------- PyTorch checkpoints without PyTorch


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


def _read_legacy_checkpoint(handle) -> object:
    if pickle.load(handle) != LEGACY_MAGIC_NUMBER:
        raise WeightsError("not a PyTorch checkpoint (wrong magic number)")
    pickle.load(handle)  # protocol version
    pickle.load(handle)  # system information
    unpickler = _CheckpointUnpickler(handle)
    result = unpickler.load()
    storages = {}
    for key in pickle.load(handle):
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


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict from an `.npz` of arrays or from a PyTorch checkpoint.

    Args:
        path: `.npz` (one array per state-dict key) or a `torch.save` file (a state dict, or a checkpoint
            dict holding one under `state_dict`; a DataParallel `module.` prefix is removed).

    Returns:
        A dict from state-dict names (e.g. `block3.downsample.0.weight`) to arrays.

    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    try:
        checkpoint = read_torch_checkpoint(path)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
        raise WeightsError(
            f"{path} is neither an .npz of state-dict arrays nor a PyTorch checkpoint ({error})"
        ) from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict (found {type(checkpoint).__name__})")
    return {key.removeprefix("module."): np.asarray(value) for key, value in state.items()}


def _torch_arrays(layer: keras.layers.Layer, prefix: str, state: dict) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = [f"{prefix}.{key}" for key in BATCH_NORM_KEYS]
    else:
        keys = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if len(layer.weights) > 1 else [])
    missing = [key for key in keys if key not in state]
    if missing:
        raise WeightsError(f"layer {layer.name!r}: the weights file has no {', '.join(missing)}")
    arrays = [state[key] for key in keys]
    if isinstance(layer, keras.layers.Conv2D):
        arrays[0] = arrays[0].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif isinstance(layer, keras.layers.Dense):
        arrays[0] = arrays[0].T
    return arrays


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray], source: str = "weights file") -> list[str]:
    """Copy a PyTorch state dict into a Keras model whose layer names are the state-dict prefixes with `_`.

    Layer `block3_downsample_0` takes `block3.downsample.0.weight`; convolution kernels are transposed
    from OIHW to HWIO, dense kernels from (out, in) to (in, out); BatchNorm takes weight, bias,
    running_mean and running_var. A classifier whose shape differs from the file's is left as it is.

    Args:
        model: the Keras model to fill.
        state: the state dict (see `read_state_dict`).
        source: the file's name, for error messages.

    Returns:
        The names of the layers that were loaded.

    Raises:
        WeightsError: naming the layer whose weights are missing or do not fit, or the file's keys that no
            layer takes.

    """
    loaded, used = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = layer.name.replace("_", ".")
        arrays = _torch_arrays(layer, prefix, state)
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [array.shape for array in arrays] != expected:
            got = [array.shape for array in arrays]
            if isinstance(layer, keras.layers.Dense) and layer is model.layers[-1]:
                used.update(key for key in state if key.startswith(prefix + "."))
                continue  # a classifier for another number of classes stays freshly initialised
            raise WeightsError(
                f"{source}: layer {layer.name!r} expects weights of shapes {expected}, the file has {got}"
            )
        layer.set_weights(arrays)
        loaded.append(layer.name)
        used.update(key for key in state if key.startswith(prefix + "."))
    unused = sorted(key for key in state if key not in used and not key.endswith("num_batches_tracked"))
    unused = [key for key in unused if not _belongs_to_absent_head(key, model)]
    if unused:
        raise WeightsError(
            f"{source}: no layer of {model.name!r} takes {unused[:5]}; is it a file for another architecture?"
        )
    return loaded


def _belongs_to_absent_head(key: str, model: keras.Model) -> bool:
    """A pretrained classifier (e.g. `fc.weight`) is ignored when the model is built without one."""
    prefix = key.rsplit(".", 1)[0].replace(".", "_")
    return prefix in ("fc", "classifier") and prefix not in {layer.name for layer in model.layers}


def read_rcmalli_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read a Keras-1/2 HDF5 weights file (e.g. rcmalli/keras-squeezenet) layer by layer with h5py.

    Args:
        path: the `.h5` file; layer names may contain `/` (e.g. `fire2/squeeze1x1`).

    Returns:
        A dict from layer names (`/` replaced by `_`) to the layer's arrays in `weight_names` order.

    """
    arrays = {}
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path} is not an HDF5 weights file; expected e.g. the rcmalli SqueezeNet .h5 file")
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        for name in root.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            group = root[name]
            weight_names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
            if weight_names:
                arrays[name.replace("/", "_")] = [np.asarray(group[weight_name]) for weight_name in weight_names]
    return arrays


def load_layer_arrays(
    model: keras.Model, arrays: dict[str, list[np.ndarray]], source: str = "weights file"
) -> list[str]:
    """Copy per-layer arrays (as from `read_rcmalli_h5`) into the model's layers of the same names.

    Args:
        model: the Keras model to fill; layers absent from `arrays` must have no weights or be the classifier.
        arrays: layer name -> arrays in the layer's weight order.
        source: the file's name, for error messages.

    Returns:
        The names of the layers that were loaded.

    Raises:
        WeightsError: naming the layer that is missing from the file or whose shapes differ.

    """
    loaded = []
    for layer in model.layers:
        if not layer.weights or (layer.name not in arrays and layer.name == "classifier"):
            continue
        if layer.name not in arrays:
            raise WeightsError(f"{source}: has no weights for layer {layer.name!r}")
        expected = [tuple(weight.shape) for weight in layer.weights]
        got = [array.shape for array in arrays[layer.name]]
        if got != expected:
            raise WeightsError(
                f"{source}: layer {layer.name!r} expects weights of shapes {expected}, the file has {got}"
            )
        layer.set_weights(arrays[layer.name])
        loaded.append(layer.name)
    extra = sorted(set(arrays) - set(loaded))
    if extra:
        raise WeightsError(
            f"{source}: no layer of {model.name!r} takes {extra[:5]}; is it a file for another architecture?"
        )
    return loaded


def check_keras_weights_file(model: keras.Model, path: str | os.PathLike) -> None:
    """Check that a Keras 3 `.weights.h5` file fits a model before loading it.

    Keras 3's `load_weights` matches layers by class and position and only warns (leaving layers freshly
    initialised) when a file does not fit; this check makes such a file an error.

    Args:
        model: the model about to be loaded.
        path: the `.weights.h5` file.

    Raises:
        WeightsError: naming the first layer whose weights are missing from the file or differ in shape.

    """
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path} is not a Keras weights file (.weights.h5)")
    with h5py.File(path, "r") as handle:
        if "layers" not in handle:
            raise WeightsError(f"{path} is not a Keras 3 weights file (no 'layers' group)")
        stored, used = handle["layers"], {}
        for layer in model.layers:
            base = to_snake_case(type(layer).__name__)
            used[base] = used.get(base, -1) + 1
            key = base if used[base] == 0 else f"{base}_{used[base]}"
            if not layer.weights:
                continue
            variables = stored.get(f"{key}/vars")
            expected = [tuple(weight.shape) for weight in layer.weights]
            got = [tuple(variables[str(index)].shape) for index in range(len(variables))] if variables else []
            if got != expected:
                if variables is None and layer is model.layers[-1] and isinstance(layer, keras.layers.Dense):
                    continue  # a new classifier on a pretrained feature extractor
                found = variables.attrs.get("name", key) if variables is not None else "nothing"
                raise WeightsError(
                    f"{path}: layer {layer.name!r} expects weights of shapes {expected}, the file has {got} "
                    f"(stored for {found!r}); is it a file for another architecture?"
                )
