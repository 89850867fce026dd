"""Every private Keras hook keras_l2t relies on, in one place, checked against the installed Keras.

Keras 3 offers no public way to do these five things; each is used for a reason stated beside it. When a Keras
release renames one, `check()` (run by the tests, and on first use of each hook) fails with the hook's name and
what it is for, instead of a bare AttributeError deep inside a training run.
"""

from __future__ import annotations

import keras

TESTED_KERAS = ("3.8", "3.15")  # the oldest Keras our pyproject allows, and the newest we ran the tests on


class KerasInternalsChanged(RuntimeError):
    """The installed Keras no longer has a private hook keras_l2t relies on."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _require(found: bool, hook: str, purpose: str) -> None:
    if not found:
        raise KerasInternalsChanged(
            f"Keras {keras.__version__} has no {hook}, which keras_l2t uses to {purpose}; it was tested with Keras "
            f"{TESTED_KERAS[0]} to {TESTED_KERAS[1]}. Install a Keras in that range, or adapt "
            "keras_l2t/keras_internals.py."
        )


def weights_file_name(layer: keras.layers.Layer) -> str:
    """The base name under which Keras 3 stores a layer in a `.weights.h5` file (its class name, snake case).

    Used to check a weights file against a model before `load_weights`, which only warns when they differ.
    """
    from keras.src.utils import naming

    _require(hasattr(naming, "to_snake_case"), "keras.src.utils.naming.to_snake_case", "read .weights.h5 layouts")
    return naming.to_snake_case(type(layer).__name__)


def set_batch_norm_moments(layer: keras.layers.BatchNormalization, moments) -> None:
    """Replace how one BatchNormalization instance computes its training-mode batch moments.

    Keras' own moments stop a gradient that second-order meta-gradients need (see `matching.exact_moments`).
    """
    _require(hasattr(layer, "_moments"), "BatchNormalization._moments", "compute exact batch moments")
    layer._moments = moments


def batch_norm_axes(layer: keras.layers.BatchNormalization) -> list[int]:
    """The axes a built BatchNormalization layer reduces over for its moments."""
    _require(hasattr(layer, "_reduction_axes"), "BatchNormalization._reduction_axes", "compute exact batch moments")
    return layer._reduction_axes


def all_layers(model: keras.Model):
    """Every layer of a model, nested models' layers included (the model itself first)."""
    _require(hasattr(model, "_flatten_layers"), "Layer._flatten_layers", "find nested BatchNormalization layers")
    return model._flatten_layers()


def parent_layers(layer: keras.layers.Layer) -> list:
    """The layers whose outputs feed this layer in a functional model (to group layers into blocks)."""
    _require(hasattr(layer, "_inbound_nodes"), "Operation._inbound_nodes", "group a backbone's layers into blocks")
    return [parent.operation for node in layer._inbound_nodes for parent in node.parent_nodes]


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Make the running `fit` start at `epoch` (Keras' own BackupAndRestore hook); None clears it."""
    _require(hasattr(model, "_initial_epoch"), "Trainer._initial_epoch", "resume a run from its backup")
    model._initial_epoch = epoch


def check() -> None:
    """Check every hook against the installed Keras (and that its version is a Keras 3).

    Raises:
        KerasInternalsChanged: naming the first hook that is missing.

    """
    _require(_version(keras.__version__)[:1] == (3,), "Keras 3 API", "build and train every model")
    layer = keras.layers.BatchNormalization()
    layer.build((None, 4, 4, 3))
    batch_norm_axes(layer)
    set_batch_norm_moments(layer, layer._moments)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    list(all_layers(model))
    parent_layers(model.layers[-1])
    set_initial_epoch(model, None)
    weights_file_name(layer)
