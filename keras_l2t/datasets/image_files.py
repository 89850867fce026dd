"""Decoding one image file safely: its size checked before its pixels are, 16-bit pixels scaled to 8-bit.

Pillow reads the size from the header without decoding; an image larger than the pixel limit (Pillow's own
`PIL.Image.MAX_IMAGE_PIXELS`, 89,478,485 pixels by default: 256 MiB as RGB) is refused with its name before any
pixel is decoded, instead of Pillow's `DecompressionBombError` traceback (it raises one only past twice the
limit). Memory for a batch or a stack of images is compared with what the machine has before it is allocated.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["available_memory", "check_memory", "check_pixels", "open_image", "pixel_limit", "to_rgb"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def pixel_limit() -> int | None:
    """The most pixels an image may have: `PIL.Image.MAX_IMAGE_PIXELS` (None: no limit), read at each call."""
    return Image.MAX_IMAGE_PIXELS


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse an image of more pixels than `pixel_limit()`.

    Args:
        width: in pixels.
        height: in pixels.
        what: names the image in the message (a file, or "image_size 10000").

    Raises:
        ValueError: too many pixels, saying the limit and how to change it.

    """
    limit = pixel_limit()
    if limit is not None and width * height > limit:
        raise ValueError(_too_large(f"{what} is {width} x {height} = {width * height:,} pixels", limit))


def _too_large(description: str, limit: int) -> str:
    return (
        f"{description}, more than the limit of {limit:,} ({limit * 3 / 2**20:,.0f} MiB as RGB); downscale it, "
        "or raise PIL.Image.MAX_IMAGE_PIXELS if the machine has the memory for it."
    )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux' MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse an allocation larger than the memory available now.

    Args:
        needed: bytes about to be allocated.
        what: what needs them, for the message.
        fix: how to need less, for the message.

    Raises:
        ValueError: `needed` exceeds `available_memory()`.

    """
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{what} needs {needed / 2**30:,.1f} GiB of memory, more than the {available / 2**30:,.1f} GiB "
            f"available; {fix}."
        )


def open_image(path: str) -> Image.Image:
    """Open an image file (header only) and check its pixel count before anything is decoded.

    Returns:
        The open Pillow image; close it (use it in a `with` block).

    Raises:
        ValueError: naming the file when it cannot be read or has too many pixels.

    """
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:  # Pillow's own check, past twice the limit
        pixels = re.search(r"\(([0-9]+) pixels\)", str(error))
        description = f"Image {path!r} has {int(pixels.group(1)):,} pixels" if pixels else f"Image {path!r} ({error})"
        raise ValueError(_too_large(description, pixel_limit() or 0)) from error
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {path!r}: {error}") from error
    try:
        check_pixels(*image.size, f"Image {path!r}")
    except ValueError:
        image.close()
        raise
    return image


def to_rgb(image: Image.Image, path: str) -> Image.Image:
    """An 8-bit RGB copy of an open image, 16-bit grey scaled (v * 255 / 65535, rounded) instead of clipped.

    Pillow's own `convert("RGB")` clips 16-bit grey values above 255 to white. Pillow already keeps the high
    byte of 16-bit RGB(A) and grey-with-alpha PNGs. 32-bit integer and floating-point images (mode I or F from
    other formats) have no one meaning of white, so they are refused.

    Raises:
        ValueError: naming the file, for a 32-bit or floating-point image.

    """
    sixteen_bit = image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG")
    if sixteen_bit:
        values = np.asarray(image, dtype="float64")
        grey = np.clip(np.round(values * (255 / 65535)), 0, 255).astype("uint8")
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("I", "F"):
        raise ValueError(
            f"Image {path!r} has {'floating-point' if image.mode == 'F' else '32-bit integer'} pixels, which have "
            "no one scale to 8-bit; save it as an 8- or 16-bit PNG or as a JPEG."
        )
    return image.convert("RGB")
