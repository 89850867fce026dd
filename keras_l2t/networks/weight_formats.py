"""Weight file formats into Keras models: PyTorch state dicts, rcmalli (Keras 1/2) h5 files, Keras 3 files.

Each loader checks the file against the architecture and names the layer that does not fit, instead of
leaving layers silently at their random initialisation.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_l2t.core import keras_internals
from keras_l2t.networks.torch_checkpoint import ADVICE, CheckpointError, read_torch_checkpoint
from keras_l2t.networks.weights import WeightsError

__all__ = ["check_keras_weights_file", "load_layer_arrays", "load_state_dict", "read_rcmalli_h5", "read_state_dict"]

BATCH_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


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
            return _checked_state({key: arrays[key] for key in arrays.files}, path)
    try:
        checkpoint = read_torch_checkpoint(path)
    except CheckpointError as error:
        what = "neither an .npz of state-dict arrays nor a readable PyTorch checkpoint"
        raise CheckpointError(f"{path} is {what}: {error.reason}. {ADVICE}") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict (found {type(checkpoint).__name__})")
    return _checked_state({str(key).removeprefix("module."): value for key, value in state.items()}, path)


def _checked_state(state: dict, path: Path) -> dict[str, np.ndarray]:
    """Refuse a state dict with entries that are not numeric arrays or that hold NaN or infinity."""
    for key, value in state.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise WeightsError(f"{path}: state-dict entry {key!r} is not a numeric tensor; the file is damaged")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            count = int(value.size - np.isfinite(value).sum())
            raise WeightsError(
                f"{path}: {key!r} holds {count} non-finite values (NaN or infinity); the file is damaged or the "
                f"weights diverged: download or copy it again, or use other weights."
            )
    return state


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
            base = keras_internals.weights_file_name(layer)
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
