"""Training augmentation: named transforms, applied per image with stateless seeds (see `augmenter`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = ["TRANSFORMS", "augment_transforms", "augmenter"]

TRANSFORMS = ("crop", "flip", "rotation")  # in the order they are applied
_ALIASES = {"crop_flip": ("crop", "flip"), "flip_rotate": ("flip", "rotation")}


def _rotation(image, angle):
    """Rotate an image about its centre (bilinear, reflected borders)."""
    import keras

    height, width = tf.cast(tf.shape(image)[0], "float32"), tf.cast(tf.shape(image)[1], "float32")
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])
    rotated = keras.ops.image.affine_transform(tf.cast(image, "float32"), transform, fill_mode="reflect")
    return tf.cast(tf.clip_by_value(tf.round(rotated), 0, 255), image.dtype)


def augment_transforms(kind: str, native_size: int) -> tuple[str, ...]:
    """The transforms an augmentation name stands for, in the order they are applied.

    "auto" never changes what a class means: a random crop (pad 4, crop back) for images of 64 px or less, small
    rotations for larger photos, and no mirroring, which turns one class into another wherever a mirror image
    means something else (keep-left and keep-right signs, arrows, digits, text). Ask for "flip" where mirroring
    is harmless (the thesis and CIFAR presets use "crop,flip", L2T-ww's CIFAR recipe).

    Args:
        kind: "auto", "none", or a comma list of "crop", "flip", "rotation" (aliases: "crop_flip",
            "flip_rotate").
        native_size: the images' stored height and width (decides "auto").

    Raises:
        ValueError: an unknown transform, listing the choices.

    """
    if kind == "auto":
        return ("crop",) if native_size <= 64 else ("rotation",)
    names = [part.strip() for part in kind.split(",") if part.strip()]
    names = [name for alias in names for name in _ALIASES.get(alias, (alias,))]
    unknown = [name for name in names if name not in TRANSFORMS + ("none",)]
    if unknown or not names:
        raise ValueError(
            f"Unknown augmentation {kind!r}; use 'auto', 'none' or a comma list of {', '.join(TRANSFORMS)}."
        )
    return tuple(name for name in TRANSFORMS if name in names)


def augmenter(kind: str, native_size: int) -> Callable | None:
    """The per-image augmentation applied to [0, 255] images before resizing (see `augment_transforms`).

    Stateless: each call takes its own seed, so runs with the same seed see the same augmented batches even
    though `tf.data` augments images in parallel. "crop" pads 4 black pixels and crops back, "flip" mirrors left
    to right, "rotation" turns by up to +-10 degrees (reflected borders).

    Returns:
        A function (image, seed of shape (2,)) -> image, or None for "none".

    """
    transforms = augment_transforms(kind, native_size)
    if not transforms:
        return None

    def crop(image, seed):
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        return tf.image.stateless_random_crop(padded, (native_size, native_size, 3), seed)

    def rotation(image, seed):
        return _rotation(image, tf.random.stateless_uniform([], seed, -np.pi / 18, np.pi / 18))

    functions = {"crop": crop, "flip": tf.image.stateless_random_flip_left_right, "rotation": rotation}

    def augment(image, seed):
        for name, own_seed in zip(transforms, tf.unstack(tf.random.split(seed, max(2, len(transforms)))), strict=False):
            image = functions[name](image, own_seed)
        return image

    return augment
