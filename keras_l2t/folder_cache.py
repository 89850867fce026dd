"""A disk cache of decoded image folders, shared by every process (like TFDS' prepared data).

Decoding 60,000 CIFAR-10 JPEGs takes a minute; loading their decoded array takes a fraction of a second. A
folder's images are stored once per (file list, sizes, modification times, requested image size) as an `.npy`
under `$KERAS_L2T_CACHE` (default `~/.cache/keras_l2t/folders`); any change to the folder's files makes a new
entry. `KERAS_L2T_CACHE=off` (or `--no-cache`) turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable

import numpy as np

__all__ = ["CACHE_VARIABLE", "cache_folder", "cached", "fingerprint"]

CACHE_VARIABLE = "KERAS_L2T_CACHE"
FORMAT = 1  # bump when the decoding changes, so that old entries are not reused


def cache_folder() -> str | None:
    """Where decoded folders are cached, or None when the cache is off."""
    value = os.environ.get(CACHE_VARIABLE, "")
    if value.lower() in ("0", "off", "no", "false"):
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "keras_l2t", "folders")


def fingerprint(paths: list[str], image_size: int | None) -> str:
    """A key for these files as they are now (names, sizes, modification times) decoded at `image_size`."""
    digest = hashlib.sha1(json.dumps([FORMAT, image_size]).encode())
    for path in paths:
        status = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached(paths: list[str], image_size: int | None, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """The decoded images of `paths`: from the cache, or `decode()` and then stored for the next process.

    A cache that cannot be read or written (a full disk, a read-only home) is skipped, never an error.
    """
    folder = cache_folder()
    if folder is None:
        return decode()
    path = os.path.join(folder, fingerprint(paths, image_size) + ".npy")
    try:
        images = np.load(path)
        if len(images) == len(paths):
            return images
    except (OSError, ValueError):
        pass
    images = decode()
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, images)
        os.replace(temporary, path)  # whole or absent: a concurrent reader never sees half a file
    except OSError:
        pass
    return images
