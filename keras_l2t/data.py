"""Datasets: image folders, TFDS and in-memory arrays, as NumPy arrays or `tf.data` pipelines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def list_image_folder(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """List the images of a `<root>/<class>/*` folder.

    Args:
        root: a folder with one sub-folder per class.

    Returns:
        (file paths, integer labels, class names sorted alphabetically).

    Raises:
        FileNotFoundError: the folder does not exist. ValueError: no class folders, or a class without images.

    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist; expected <root>/<class>/<image> files.")
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(f"Image folder {str(root)!r} has no class sub-folders; expected <root>/<class>/<image> files.")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(str(f) for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"Class folder {str(root / name)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, "int64"), class_names


def read_image(path: str, image_size: int | None = None) -> np.ndarray:
    """Read one image as RGB uint8, optionally resized (bilinear, antialiased) to a square.

    Args:
        path: the image file.
        image_size: the output height and width; None keeps the image's own size.

    Returns:
        An array of shape (height, width, 3), dtype uint8.

    Raises:
        ValueError: naming the file when it cannot be decoded.

    """
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {path!r}: {error}") from error
    if image_size is not None and array.shape[:2] != (image_size, image_size):
        resized = tf.image.resize(array, (image_size, image_size), antialias=True)
        array = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
    return array


def read_images(paths: list[str], image_size: int | None = None) -> np.ndarray:
    """Read many images (see `read_image`) into one uint8 array of shape (N, size, size, 3).

    Args:
        paths: image files.
        image_size: common output size; required unless every image has the same size.

    Returns:
        The stacked images.

    """
    return np.stack([read_image(path, image_size) for path in paths])


def load_image_folder(
    root: str | os.PathLike, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a whole `<root>/<class>/*` folder into memory.

    Args:
        root: the folder.
        image_size: output height and width (None keeps the images' own, equal sizes).

    Returns:
        (images uint8 (N, size, size, 3), labels int64 (N,), class names).

    """
    paths, labels, class_names = list_image_folder(root)
    return read_images(paths, image_size), labels, class_names
