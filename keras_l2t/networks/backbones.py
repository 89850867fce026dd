"""The backbone registry: every network by name, with sizes, preprocessing, taps, blocks and weights.

>>> from keras_l2t import backbones
>>> model = backbones.build("mobilenet_v2", weights="imagenet", input_shape=(160, 160, 3))
>>> features = backbones.tap_model(model)  # outputs the spec's taps, in order
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import keras

from keras_l2t.core import keras_internals
from keras_l2t.networks import applications, catalog
from keras_l2t.networks import weights as weights_lib
from keras_l2t.networks.catalog import BackboneSpec

__all__ = ["BackboneSpec", "blocks", "build", "names", "register", "spec", "tap_model"]

_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (or replace one of the same name).

    Args:
        spec: the backbone's description.

    Returns:
        The same spec.

    """
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """List every registered backbone name.

    Returns:
        The names, in registration order.

    """
    return list(_REGISTRY)


def spec(name: str) -> BackboneSpec:
    """Describe a backbone.

    Args:
        name: a registered name (see `names()`).

    Returns:
        Its `BackboneSpec`.

    Raises:
        KeyError: for an unknown name, listing close matches and every registered name.

    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"Unknown backbone {name!r}.{hint} Registered backbones: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def _check_input_shape(backbone: BackboneSpec, input_shape) -> tuple:
    if input_shape is None:
        return backbone.default_input_shape
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(
            f"{backbone.name}: input_shape must be (height, width, 3) for RGB images or (height, width, 1) for "
            f"grayscale ones, got {input_shape}."
        )
    too_small = [size for size in input_shape[:2] if size is not None and size < backbone.min_size]
    if too_small:
        raise ValueError(
            f"{backbone.name} needs inputs of at least {backbone.min_size}x{backbone.min_size} pixels, got "
            f"{input_shape[0]}x{input_shape[1]}. Resize the images (e.g. image_size={backbone.default_size}, its "
            f"usual size) or choose a backbone that accepts smaller inputs."
        )
    return input_shape


def _resolve_weights(backbone: BackboneSpec, weights, input_shape) -> str | None:
    """Map None / a named pretraining / a path to a local file (named weights: mirror, cache, then download)."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights in backbone.weight_sources:
        return weights_lib.download(backbone.weight_source(weights, input_shape), backbone.name)
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        named = ", ".join(map(repr, backbone.weight_sources)) or "none"
        raise FileNotFoundError(
            f"{backbone.name}: weights {str(weights)!r} is neither a named pretraining ({named}) nor an existing file."
        )
    return str(path)


def build(name: str, *, weights=None, input_shape=None, num_classes: int | None = None) -> keras.Model:
    """Build a backbone by name.

    Args:
        name: a registered name (see `names()`).
        weights: None (random initialisation), a named pretraining of this backbone (e.g. "imagenet",
            see `spec(name).weight_sources`), or the path of a local weights file. Named weights are looked
            up in the folders of `$KERAS_L2T_WEIGHTS_DIR` and the Keras cache before they are downloaded.
        input_shape: (height, width, 3); default `spec(name).default_input_shape`.
        num_classes: None for the feature extractor; a number adds global average pooling and a Dense
            classifier that returns logits.

    Raises:
        KeyError: unknown name. ValueError: input too small. FileNotFoundError: missing weights file.
        WeightsError: a weights file that does not fit (names the layer). WeightsUnavailableError: named
        weights that cannot be downloaded (offline), with how to pass a local file instead.

    """
    backbone = spec(name)
    input_shape = _check_input_shape(backbone, input_shape)
    resolved = _resolve_weights(backbone, weights, input_shape)
    try:
        model = backbone.builder(resolved, input_shape, num_classes)
    except weights_lib.WeightsError:
        raise
    except ValueError as error:
        if resolved is None:
            raise
        raise weights_lib.WeightsError(
            f"{name}: the weights file {resolved} does not fit the architecture: {error}"
        ) from error
    # the network carries its own taps and blocks, so a renamed model keeps them (KerasHub-style)
    model.backbone_taps, model.backbone_blocks = tuple(backbone.taps), tuple(backbone.blocks)
    return model


def _declared(model: keras.Model, attribute: str, field: str) -> tuple:
    """The taps or blocks a built model carries, else those of the registered backbone named like it."""
    if getattr(model, attribute, None) is not None:
        return getattr(model, attribute)
    if model.name not in _REGISTRY:
        raise ValueError(
            f"{model.name!r} was not built by keras_l2t.backbones.build and is no registered backbone: pass its "
            f"{field} (layer names) explicitly."
        )
    return getattr(spec(model.name), field)


def tap_model(model: keras.Model, taps=None, *, include_output: bool = False) -> keras.Model:
    """A model with the same weights that outputs the tapped intermediate features.

    Args:
        model: a model built by `build` (or any functional model).
        taps: layer names; default the taps the model was built with (`build` sets `model.backbone_taps`), else
            those of the registered backbone named `model.name`.
        include_output: also return the model's own output, after the taps.

    Returns:
        A `keras.Model` returning a list of feature maps (plus the output when asked).

    """
    if taps is None:
        taps = _declared(model, "backbone_taps", "taps")
    layer_names = {layer.name for layer in model.layers}
    missing = [tap for tap in taps if tap not in layer_names]
    if missing:
        raise ValueError(
            f"{model.name} has no layers named {missing}; its layers include {sorted(layer_names)[:10]}..."
        )
    outputs = [model.get_layer(tap).output for tap in taps]
    if include_output:
        outputs.append(model.output)
    return keras.Model(model.input, outputs, name=f"{model.name}_taps")


def _ancestors(layer: keras.layers.Layer, seen: set) -> set:
    stack = [layer]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        stack.extend(keras_internals.parent_layers(current))
    return seen


def blocks(model: keras.Model, ends=None) -> list[list[str]]:
    """Group a model's layers into its ordered blocks (for "fine-tune the last N blocks").

    Args:
        model: a model built by `build`.
        ends: names of the last layer of each block; default the blocks the model was built with
            (`model.backbone_blocks`), else those of the registered backbone named `model.name`.

    Returns:
        One list of layer names per block, in order; the input layer belongs to no block and layers after
        the last end (e.g. a classifier) join the last block.

    """
    if ends is None:
        ends = _declared(model, "backbone_blocks", "blocks")
    done = {layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)}
    groups = []
    for end in ends:
        members = _ancestors(model.get_layer(end), set(done)) - done
        groups.append([layer.name for layer in model.layers if layer.name in members])
        done |= members
    groups[-1] += [layer.name for layer in model.layers if layer.name not in done]
    return groups


for _spec in catalog.own_networks() + applications.keras_applications():
    register(_spec)
