"""Using a trained model: save it with what it needs, classify new images, draw a contact sheet, export it.

A model saved by `save_model` is a plain `.keras` file (`keras.models.load_model` reads it) that also carries
`keras_l2t.json` inside its zip: the class names, the input size and the backbone whose preprocessing it
expects. `predict` needs nothing else: give it the file (or a TFLite export beside its `.json`) and images.

>>> from keras_l2t import inference
>>> rows = inference.predict("runs/x/models/run.keras", ["cat.png", "photos/"], top_k=3)
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_l2t.datasets import sources
from keras_l2t.networks import backbones
from keras_l2t.running import model_files

__all__ = ["contact_sheet", "export", "load_model", "predict", "read_metadata", "save_model", "write_csv"]

METADATA = "keras_l2t.json"


def save_model(model: keras.Model, path: str, *, class_names, image_size: int, network: str, **details) -> str:
    """Save a classifier as `.keras` with its metadata inside (class names, input size, preprocessing network).

    Args:
        model: returns logits for images preprocessed as `backbones.spec(network).preprocess` does.
        path: the `.keras` file to write (its folder is created).
        class_names: the class of each output.
        image_size: the input height and width.
        network: the backbone whose preprocessing the inputs need.
        **details: more JSON-serialisable facts to keep (strategy, accuracies, ...).

    Returns:
        The path written.

    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if getattr(model, "optimizer", None) is not None:  # the weights, not the training state (a third the size)
        model = keras.Model(model.input, model.output, name=model.name)  # the same layers, not compiled
    model.save(path)
    names = [str(name) for name in class_names]  # as `model_files.check_metadata` expects them back
    metadata = {"class_names": names, "image_size": int(image_size), "network": network, **details}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA, json.dumps(metadata, indent=1, default=str))
    return path


def read_metadata(path: str) -> dict:
    """The metadata of a model saved by `save_model` (or the `.json` beside an exported file), checked.

    Raises:
        ValueError: the file carries none (not saved by keras_l2t), or it is malformed
            (`model_files.check_metadata`), saying what to do.

    """
    sidecar = Path(path).with_suffix(".json")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if METADATA in archive.namelist():
                    return model_files.check_metadata(json.loads(archive.read(METADATA)), path)
        elif sidecar.is_file():
            return model_files.check_metadata(json.loads(sidecar.read_text()), path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: its keras_l2t metadata is not readable JSON ({error}).") from None
    raise ValueError(
        f"{path} carries no keras_l2t metadata (class names, input size, preprocessing): use a model saved by a "
        "keras_l2t run (<out>/models/*.keras) or keras_l2t.inference.save_model, or its export with the .json beside."
    )


def load_model(path: str) -> tuple[keras.Model, dict]:
    """Load a `.keras` file saved by `save_model`: (the model, its metadata), checked to fit each other.

    Raises:
        ValueError: the file, its config or its metadata cannot be used (`keras_l2t.running.model_files`).
    """
    metadata = read_metadata(path)
    model = model_files.load_keras(path)
    model_files.check_fits(metadata, path, model.input_shape, int(model.output_shape[-1]))
    return model, metadata


def _image_files(inputs) -> list[str]:
    files = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_dir():
            files += sorted(str(path) for path in item.rglob("*") if sources.is_image_file(path))
        elif item.is_file():
            files.append(str(item))
        else:
            raise FileNotFoundError(f"{item} is neither an image file nor a folder.")
    if not files:
        raise ValueError(f"No images found in {', '.join(map(str, inputs))}.")
    return files


class _TFLiteClassifier:
    """A TFLite export called like a Keras model (float32 inputs, int8 quantisation handled), verified first."""

    def __init__(self, path: str):
        self.interpreter = model_files.load_tflite(path)
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        for image in images:  # the interpreter is built for batches of one
            value = image[None].astype("float32")
            scale, zero = self.input["quantization"]
            if self.input["dtype"] != np.float32:
                value = np.round(value / scale + zero).astype(self.input["dtype"])
            self.interpreter.set_tensor(self.input["index"], value)
            self.interpreter.invoke()
            result = self.interpreter.get_tensor(self.output["index"]).astype("float32")
            scale, zero = self.output["quantization"]
            outputs.append((result - zero) * scale if self.output["dtype"] != np.float32 else result)
        return np.concatenate(outputs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(model_path: str, inputs, *, top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """Classify image files (and every image in given folders) with a saved model or its TFLite export.

    Args:
        model_path: a `.keras` file saved by `save_model`, or a `.tflite` export with its `.json` beside it.
        inputs: image files and folders.
        top_k: how many classes to report per image.
        batch_size: images per forward pass (Keras models).

    Returns:
        One dict per image: file, then `top` = [(class name, probability), ...] best first.

    """
    if str(model_path).endswith(".tflite"):
        metadata = read_metadata(model_path)
        classify = _TFLiteClassifier(model_path)
        model_files.check_fits(metadata, model_path, *model_files.tflite_shapes(classify.interpreter))
    else:
        model, metadata = load_model(model_path)
        classify = lambda batch: np.asarray(model(batch, training=False))  # noqa: E731
    preprocess = backbones.spec(metadata["network"]).preprocess
    names, files, rows = metadata["class_names"], _image_files(inputs), []
    top_k = max(1, min(top_k, len(names)))
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = np.asarray(preprocess(sources.read_images(chunk, metadata["image_size"])), "float32")
        probabilities = _softmax(classify(images))
        for file, row in zip(chunk, probabilities, strict=True):
            best = np.argsort(-row)[:top_k]
            rows.append({"file": file, "top": [(names[index], float(row[index])) for index in best]})
    return rows


def write_csv(rows: list[dict], path: str) -> str:
    """Write predictions as CSV: file, then class_1, probability_1, ... per rank."""
    ranks = max(len(row["top"]) for row in rows)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["file"] + [f"{kind}_{rank}" for rank in range(1, ranks + 1) for kind in ("class", "probability")]
        )
        for row in rows:
            ranked = [value for name, probability in row["top"] for value in (name, f"{probability:.6f}")]
            writer.writerow([row["file"], *ranked])
    return path


def contact_sheet(rows: list[dict], path: str, columns: int = 4) -> str:
    """A PNG of the images, each titled with its predicted class and probability (and the runner-up)."""
    from matplotlib.figure import Figure

    count = len(rows)
    columns = min(columns, count)
    lines = math.ceil(count / columns)
    figure = Figure(figsize=(2.6 * columns, 3.0 * lines), layout="constrained")
    for index, row in enumerate(rows):
        axis = figure.add_subplot(lines, columns, index + 1)
        axis.imshow(sources.read_image(row["file"]))  # the pixels the model saw (16-bit PNGs at their depth)
        name, probability = row["top"][0]
        title = f"{name} {100 * probability:.1f} %"
        if len(row["top"]) > 1:
            title += f"\n({row['top'][1][0]} {100 * row['top'][1][1]:.1f} %)"
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(os.path.basename(row["file"]), fontsize=7)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.savefig(path, dpi=100)
    return path


def export(model: keras.Model, path: str, format: str = "saved_model", *, calibration=None, metadata=None) -> str:
    """Export a model for serving (`saved_model`) or for phones (`tflite`, float32 or int8).

    Args:
        model: a Keras classifier (e.g. from `load_model`).
        path: the folder (saved_model) or `.tflite` file to write.
        format: "saved_model" or "tflite".
        calibration: for an int8 TFLite model, preprocessed images (a few hundred training images) from which
            the converter measures each tensor's range; None keeps float32.
        metadata: written to `<path without suffix>.json` (class names, input size, network) for `predict`.

    Returns:
        The path written.

    """
    import tensorflow as tf

    if format not in ("saved_model", "tflite"):
        raise ValueError(f"Unknown export format {format!r}; choose 'saved_model' or 'tflite'.")
    if metadata is not None:
        Path(path).with_suffix(".json").write_text(json.dumps(metadata, indent=1, default=str))
    if format == "saved_model":
        model.export(path, format="tf_saved_model", verbose=False)
        return path
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # via a SavedModel, which freezes the variables
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        _configure_tflite(converter, calibration)
        Path(path).write_bytes(converter.convert())
    return path


def _configure_tflite(converter, calibration) -> None:
    import tensorflow as tf

    if calibration is not None:
        samples = np.asarray(calibration, "float32")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8


def resolve_model(path: str) -> str:
    """A model file from a path: the file itself, or the best kept model of a comparison's output folder.

    In a folder, the kept model with the highest validation accuracy (one of those its summary lists).

    Raises:
        FileNotFoundError: nothing there, or a folder without kept models.

    """
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--model {path} is neither a model file nor an output folder.")
    from keras_l2t.analysis.report import best_run
    from keras_l2t.core.paths import GridPaths
    from keras_l2t.running.results import read_results

    paths = GridPaths(path)
    best = best_run(read_results(path), keep=lambda run: os.path.exists(paths.run(run).model))
    if best is None:
        raise FileNotFoundError(
            f"{path} holds no kept models ({paths.models}); run the comparison with --keep-models best or all."
        )
    return paths.run(best["run"]).model


def export_file(model_path: str, target: str, *, int8: bool = False, calibration: str | None = None) -> str:
    """Export a saved model (see `save_model`) to `.tflite` or a SavedModel folder, metadata beside it.

    Args:
        model_path: a `.keras` file saved by `save_model`.
        target: `<name>.tflite`, or a folder for a SavedModel.
        int8: quantise to int8 (TFLite only), calibrated on up to 300 images of `calibration`.
        calibration: a folder of training images (any layout), needed for `int8`.

    """
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ValueError(f"--export {target}: the folder {folder} does not exist; create it or choose another path.")
    model, metadata = load_model(model_path)
    tflite = str(target).endswith(".tflite")
    samples = None
    if int8:
        if not tflite or not calibration:
            raise ValueError("--int8 needs a .tflite target and --calibration <a folder of training images>.")
        files = _image_files([calibration])
        files = [files[index] for index in np.random.default_rng(0).permutation(len(files))[:300]]
        preprocess = backbones.spec(metadata["network"]).preprocess
        samples = np.asarray(preprocess(sources.read_images(files, metadata["image_size"])), "float32")
    return export(model, target, "tflite" if tflite else "saved_model", calibration=samples, metadata=metadata)
