"""Model files checked before anything is built from them: what `inference` loads is what it says it is.

- A `.keras` file's `config.json` may name Keras objects only (module `keras` or `keras.*`): a config that names
  `os.system`, `builtins.eval` or any other module is refused before Keras reads it (Keras' safe mode would not
  call it either, but ends in a traceback).
- A `.tflite` file must carry TFLite's FlatBuffer identifier ("TFL3" at bytes 4-8) and is handed to the
  interpreter as bytes (`model_content`), the path on which TFLite runs the FlatBuffers verifier: every offset
  and length of its tables must lie within the file. From a path (`model_path`) TFLite does not verify, and half
  a real model killed the interpreter with signal 11.
- The metadata (class names, input size, network) must be well formed, the input size at most
  `config.MAX_IMAGE_SIZE` (checked before any image is allocated), and must fit the model: one class name per
  output, the model's input size when it has a fixed one.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np

from keras_l2t.networks import backbones
from keras_l2t.running.config import MAX_IMAGE_SIZE

__all__ = ["check_fits", "check_metadata", "load_keras", "load_tflite"]

TFLITE_IDENTIFIER = b"TFL3"
_RESAVE = "save it again with keras_l2t.running.inference.save_model (or export it again with its .json)"


def check_metadata(metadata, path: str) -> dict:
    """Check a model's metadata on its own: class names, input size, network.

    Args:
        metadata: the decoded `keras_l2t.json` (or the `.json` beside an export).
        path: the model file, for messages.

    Returns:
        The metadata, unchanged.

    Raises:
        ValueError: what is wrong, naming the file.
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: its keras_l2t metadata is not a JSON object; {_RESAVE}.")
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: its metadata has no list of class names; {_RESAVE}.")
    if len(set(names)) < len(names):
        raise ValueError(f"{path}: its metadata names a class twice ({names}); {_RESAVE}.")
    size = metadata.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"{path}: its metadata gives image size {size!r}; keras_l2t models take 1 to {MAX_IMAGE_SIZE} pixels a "
            f"side; {_RESAVE}."
        )
    try:
        backbones.spec(metadata.get("network"))
    except (KeyError, TypeError):
        raise ValueError(
            f"{path}: its metadata names no known network ({metadata.get('network')!r}); {_RESAVE}."
        ) from None
    return metadata


def check_fits(metadata: dict, path: str, input_shape, outputs: int) -> None:
    """Check metadata against its model: one class name per output, and the model's input size.

    Args:
        metadata: checked by `check_metadata`.
        path: the model file, for messages.
        input_shape: the model's input shape (batch first; None where it is not fixed).
        outputs: the number of the model's outputs (classes).

    Raises:
        ValueError: they disagree (the message gives both).
    """
    names = metadata["class_names"]
    if len(names) != outputs:
        raise ValueError(
            f"{path}: its metadata names {len(names)} classes ({', '.join(names)}) but the model has {outputs} "
            f"outputs, so its predictions would carry wrong labels; {_RESAVE}."
        )
    size = metadata["image_size"]
    fixed = [int(side) for side in tuple(input_shape)[1:3] if side is not None and int(side) > 0]
    if fixed and fixed != [size] * len(fixed):
        raise ValueError(
            f"{path}: its metadata gives image size {size} but the model takes {'x'.join(map(str, fixed))} inputs; "
            f"{_RESAVE}."
        )


def _foreign_modules(value) -> set[str]:
    """Every `module` a Keras config names outside Keras itself."""
    found = set()
    if isinstance(value, dict):
        module = value.get("module")
        if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
            found.add(f"{module}.{value.get('class_name')}")
        for item in value.values():
            found |= _foreign_modules(item)
    elif isinstance(value, list):
        for item in value:
            found |= _foreign_modules(item)
    return found


OWN_LAYERS = {
    "keras_l2t.datasets.augment.Equalize"
}  # keras_l2t's own layers a kept model may hold (plain config, no code)


def load_keras(path: str):
    """Load a `.keras` file whose config names Keras objects only (not compiled, in Keras' safe mode).

    Args:
        path: the `.keras` file.

    Returns:
        The model.

    Raises:
        ValueError: the config names anything else, or Keras cannot build the model (the message says why).
    """
    import keras

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a Keras model file (its config.json cannot be read: {error}).") from None
    foreign = _foreign_modules(config) - OWN_LAYERS
    if foreign:
        raise ValueError(
            f"{path} names {', '.join(sorted(foreign))} in its config, which is not a Keras object: refused, nothing "
            "was loaded or run. Use a model saved by keras_l2t."
        )
    from keras_l2t.datasets import augment  # noqa: F401  (registers OWN_LAYERS' Equalize)

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a damaged or foreign file: Keras' errors span many types
        reason = str(error).rsplit("Exception encountered: ", 1)[-1].split("\n", 1)[0][:300]
        raise ValueError(f"{path} cannot be loaded as a Keras model ({reason}).") from None


def load_tflite(path: str):
    """A TFLite interpreter for a file that passes TFLite's FlatBuffers verifier, its tensors allocated.

    Args:
        path: the `.tflite` file.

    Returns:
        A `tf.lite.Interpreter`.

    Raises:
        ValueError: the file is not a TFLite model, or is damaged (cut short, overwritten).
    """
    with open(path, "rb") as file:
        content = file.read()
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"{path} is not a TFLite model (no 'TFL3' identifier at its start); export it again.")
    import tensorflow as tf

    try:  # from bytes, TFLite verifies the FlatBuffer before it reads a table (not from a path)
        interpreter = tf.lite.Interpreter(model_content=content)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is a damaged TFLite model ({reason}); export it again.") from None
    return interpreter


def tflite_shapes(interpreter) -> tuple[tuple, int]:
    """(input shape, number of outputs) of a TFLite interpreter, for `check_fits`."""
    shape = tuple(int(side) for side in interpreter.get_input_details()[0]["shape"])
    return shape, int(np.prod(interpreter.get_output_details()[0]["shape"][1:]))
