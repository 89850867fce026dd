"""A disk cache of decoded image folders, shared by every process (like TFDS' prepared data).

Decoding 60,000 CIFAR-10 PNGs takes half a minute; loading their decoded array takes a fraction of a second. A
folder's images are stored once per (file list, sizes, modification and change times, requested image size) as
an `.npy` under `$KERAS_L2T_CACHE` (default `~/.cache/keras_l2t/folders`); any change to the folder's files makes
a new entry. The change time (ctime) is set by the system on every write and cannot be put back, so a file
rewritten in place with its size and modification time restored still makes a new entry.

Each entry's name ends with the SHA-256 of its array (shape, dtype and bytes), checked on every read: a damaged
entry is reported, deleted and decoded again. Entries are written to a temporary file renamed into place, removed
if the write fails (a full disk). The cache holds at most `$KERAS_L2T_CACHE_SIZE` (default 4G; e.g. 500M, 20G,
or bytes): after each write the least recently used entries are deleted until it fits, and an entry larger than
the whole limit is not stored. `KERAS_L2T_CACHE=off` (or `--no-cache`) turns the cache off.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

__all__ = [
    "CACHE_VARIABLE",
    "SIZE_VARIABLE",
    "cache_folder",
    "cached",
    "checksum",
    "evict",
    "fingerprint",
    "size_limit",
]

CACHE_VARIABLE = "KERAS_L2T_CACHE"
SIZE_VARIABLE = "KERAS_L2T_CACHE_SIZE"
DEFAULT_SIZE = "4G"
FORMAT = 2  # bump when the decoding or the key changes, so that old entries are not reused
TEMPORARY_SUFFIX = ".npy.tmp"
STALE_SECONDS = 3600  # a temporary file this old is a killed writer's leftover, not a write in progress
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def cache_folder() -> str | None:
    """Where decoded folders are cached, or None when the cache is off."""
    value = os.environ.get(CACHE_VARIABLE, "")
    if value.lower() in ("0", "off", "no", "false"):
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "keras_l2t", "folders")


def size_limit() -> int:
    """The most bytes the cache may hold: `$KERAS_L2T_CACHE_SIZE` (binary units K, M, G, T), default 4G.

    Raises:
        ValueError: a value that is not a size, saying what is accepted.

    """
    text = os.environ.get(SIZE_VARIABLE, "").strip() or DEFAULT_SIZE
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:I?B)?", text.upper())
    if found is None:
        raise ValueError(
            f"{SIZE_VARIABLE}={text!r} is not a size; use bytes or a number with K, M, G or T (e.g. 500M, 4G)."
        )
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def fingerprint(paths: list[str], image_size: int | None) -> str:
    """A key for these files as they are now (names, sizes, modification and change times) decoded at `image_size`.

    Raises:
        ValueError: naming a file that cannot be examined (missing, a symbolic link loop).

    """
    digest = hashlib.sha1(json.dumps([FORMAT, image_size]).encode())
    for path in paths:
        try:
            status = os.stat(path)
        except OSError as error:
            raise ValueError(f"Cannot read image {path!r}: {error}") from error
        digest.update(
            f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ctime_ns}\n".encode()
        )
    return digest.hexdigest()


def checksum(images: np.ndarray) -> str:
    """The SHA-256 of an array's shape, dtype and bytes (first 32 hex digits), which names its cache entry."""
    digest = hashlib.sha256(f"{images.shape}{images.dtype.str}".encode())
    digest.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    return digest.hexdigest()[:32]


def _load(path: str) -> np.ndarray | None:
    """The entry's array if it matches the checksum in its name; a damaged entry is reported and deleted."""
    try:
        images = np.load(path)
        if checksum(images) == path[-len(".npy") - 32 : -len(".npy")]:
            _mark_used(path)
            return images
        problem = "its content does not match its checksum"
    except FileNotFoundError:  # evicted by another process since it was listed
        return None
    except (ValueError, EOFError, MemoryError) as error:  # a cut file or a damaged header
        problem = f"it cannot be read ({error})"
    except OSError:  # unreadable here (permissions): skipped, as an unwritable cache is
        return None
    warnings.warn(
        f"Cache entry {path} is damaged: {problem}; it is deleted and the images decoded again.", stacklevel=3
    )
    _remove(path)
    return None


def _mark_used(path: str) -> None:
    """Set an entry's modification time to now: its last use, for the least-recently-used eviction."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache is still read
        pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _store(folder: str, key: str, images: np.ndarray) -> None:
    """Write an entry through a temporary file renamed into place; the temporary file never outlives a failure."""
    limit = size_limit()
    if images.nbytes > limit:
        warnings.warn(
            f"The decoded images ({images.nbytes / 2**20:,.0f} MiB) are not cached: larger than {SIZE_VARIABLE} "
            f"({limit / 2**20:,.0f} MiB); raise it to cache them.",
            stacklevel=3,
        )
        return
    temporary = None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=TEMPORARY_SUFFIX)
        with os.fdopen(handle, "wb") as file:
            np.save(file, images)
        os.replace(temporary, os.path.join(folder, f"{key}-{checksum(images)}.npy"))  # whole or absent
        temporary = None
    except OSError as error:
        warnings.warn(
            f"The decoded images are not cached in {folder} ({error}); they will be decoded again.", stacklevel=3
        )
    finally:
        if temporary is not None:
            _remove(temporary)
    evict(folder, limit)


def evict(folder: str, limit: int) -> list[str]:
    """Delete the least recently used entries until the cache holds at most `limit` bytes.

    Temporary files older than an hour (left by a killed process) are deleted too.

    Args:
        folder: the cache folder.
        limit: bytes.

    Returns:
        The deleted files.

    """
    entries, deleted, now = [], [], time.time()
    for path in glob.glob(os.path.join(folder, "*.npy")) + glob.glob(os.path.join(folder, "*" + TEMPORARY_SUFFIX)):
        try:
            status = os.stat(path)
        except OSError:
            continue
        if path.endswith(TEMPORARY_SUFFIX):
            if now - status.st_mtime > STALE_SECONDS:
                _remove(path)
                deleted.append(path)
            continue
        entries.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        _remove(path)
        deleted.append(path)
        total -= size
    return deleted


def cached(
    paths: list[str], image_size: int | None, decode: Callable[[], np.ndarray], key: str | None = None
) -> np.ndarray:
    """The decoded images of `paths`: from the cache, or `decode()` and then stored for the next process.

    `key` is `fingerprint(paths, image_size)` when the caller has it already.

    A cache that cannot be read or written (a full disk, a read-only home) is skipped with a warning, never an
    error; a damaged entry is deleted with a warning and the images decoded again.

    Raises:
        ValueError: a file that cannot be examined (named), or a bad `$KERAS_L2T_CACHE_SIZE`.

    """
    folder = cache_folder()
    if folder is None:
        return decode()
    key = key or fingerprint(paths, image_size)
    for path in sorted(glob.glob(os.path.join(folder, key + "-*.npy"))):
        images = _load(path)
        if images is not None and len(images) == len(paths):
            return images
    images = decode()
    _store(folder, key, images)
    return images
