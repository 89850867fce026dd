"""Where and in which precision a run trains: `tf.distribute` over devices, and Keras' mixed-precision policies.

One run on several devices trains under `tf.distribute.MirroredStrategy` (synchronous data parallelism: the
batch size is the global batch, split across replicas); `L2TModel` scales its losses to the global batch and
all-reduces its look-ahead and BatchNorm moments, so that N replicas take the 1-device step. Mixed precision
uses Keras' global dtype policy: the networks compute in 16 bits with float32 variables; matching maps, adapters
and meta-networks stay float32 (`matching.matching_dtype`); under "mixed_float16" Keras adds loss scaling.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from keras_l2t.core import keras_internals

__all__ = ["PRECISIONS", "computing_in", "device_names", "distribution", "parse_devices", "precision"]

_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}  # see `distribution`
PRECISIONS = ("bfloat16", "float16")  # `--mixed-precision`: Keras' "mixed_bfloat16" / "mixed_float16"


def device_names() -> list[str]:
    """The devices a run can use: the GPUs, else the (logical) CPU devices."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def parse_devices(value) -> int | str:
    """`--devices` as a config holds it: a whole number of at least 1, or "all".

    Args:
        value: a number, "all", or its text.

    Returns:
        The number, or "all".

    """
    if str(value) == "all":
        return "all"
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"devices (--devices) must be a whole number of at least 1 or 'all', got {value!r}.")
    return int(value)


def distribution(devices: int | str = 1, batch_size: int | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy of a run: the default (one device) or MirroredStrategy over N devices.

    Args:
        devices: how many devices (GPUs, else logical CPU devices), or "all".
        batch_size: the global batch, checked to split evenly (Keras 3.15 with TensorFlow 2.21 fails with
            "Inputs to operation AddN ... must have the same size" when a fit's or an evaluate's first batch does not).

    Returns:
        A strategy; build the model inside its `scope()` and `fit` it as usual.

    """
    devices = parse_devices(devices)
    available = device_names()
    if devices == "all":
        devices = len(available)
    if devices == 1:
        return tf.distribute.get_strategy()
    if devices > len(available):
        raise ValueError(
            f"--devices {devices} needs {devices} devices, but TensorFlow sees {len(available)} ({available}). "
            "Use --devices all, or fewer; on a CPU, logical devices must be made with "
            "tf.config.set_logical_device_configuration before TensorFlow starts."
        )
    if batch_size is not None and batch_size % devices:
        raise ValueError(
            f"The batch size {batch_size} does not split evenly over {devices} devices; choose a multiple of {devices}."
        )
    names = tuple(available[:devices])
    if names not in _MIRRORED:  # one instance per device set and process: a second one's collectives collide
        _MIRRORED[names] = tf.distribute.MirroredStrategy(list(names))
    return _MIRRORED[names]


@contextlib.contextmanager
def precision(mixed: str | None):
    """Set Keras' global dtype policy for a block ("mixed_<mixed>"), and restore the previous one after it.

    Args:
        mixed: None (the current policy, float32 by default), "bfloat16" or "float16".

    """
    if mixed is not None and mixed not in PRECISIONS:
        raise ValueError(f"Unknown mixed precision {mixed!r}; choose one of {', '.join(PRECISIONS)}.")
    previous = keras.config.dtype_policy()
    if mixed is not None:
        keras.config.set_dtype_policy(f"mixed_{mixed}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def computing_in(model: keras.Model, dtype: str):
    """Make every layer of a model compute in `dtype` for a block (its variables are untouched), then restore.

    `L2TModel` traces its second-order meta step inside this block, so that under a mixed policy the look-ahead
    runs in float32: through bfloat16 layers, the meta-gradient on a fixed batch had a cosine of 0.08 with the
    float32 one (measured on this CPU, vgg9 target, 15 pairs); see the README's mixed-precision section.

    Args:
        model: the network.
        dtype: the compute dtype, e.g. "float32".

    """
    layers = list(keras_internals.all_layers(model))  # the model itself first
    policies = [layer.dtype_policy for layer in layers]
    if all(policy.compute_dtype == dtype for policy in policies):
        yield
        return
    for layer in layers:
        layer.dtype_policy = keras.DTypePolicy(dtype)
    try:
        yield
    finally:
        for layer, policy in zip(layers, policies, strict=True):
            layer.dtype_policy = policy
