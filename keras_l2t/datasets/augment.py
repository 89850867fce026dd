"""Training augmentation: named transforms, applied per image with stateless seeds (see `augmenter`)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

__all__ = ["TRANSFORMS", "Equalize", "augment_transforms", "augmenter", "input_filters"]

TRANSFORMS = ("crop", "flip", "rotation", "blur")  # in the order they are applied
_ALIASES = {"crop_flip": ("crop", "flip"), "flip_rotate": ("flip", "rotation")}


def _rotation(image, angle):
    """Rotate an image about its centre (bilinear, reflected borders)."""
    height, width = tf.cast(tf.shape(image)[0], "float32"), tf.cast(tf.shape(image)[1], "float32")
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])
    rotated = keras.ops.image.affine_transform(tf.cast(image, "float32"), transform, fill_mode="reflect")
    return tf.cast(tf.clip_by_value(tf.round(rotated), 0, 255), image.dtype)


def _blur(image, seed):
    """Blur an image with a 3x3 Gaussian of a random sigma in (0, 1] pixels (reflected borders)."""
    sigma = tf.random.stateless_uniform([], seed, 0.05, 1.0)
    weights = tf.exp(-tf.constant([1.0, 0.0, 1.0]) / (2 * sigma**2))
    weights /= tf.reduce_sum(weights)
    kernel = weights[:, None] * weights[None, :]
    channels = tf.shape(image)[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    padded = tf.pad(tf.cast(image, "float32")[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")[0]
    return tf.cast(tf.clip_by_value(tf.round(blurred), 0, 255), image.dtype)


def input_filters(images, grayscale: bool = False, equalize: bool = False, value_range=(0.0, 255.0)):
    """Filters at a model's input, before its network (so a saved model applies them too): not random.

    Keras 3 layers and ops: `keras.ops.image.rgb_to_grayscale` (one channel), then `keras.layers.Equalization`
    (histogram equalisation per image), as in the course's traffic-sign recipe.

    Args:
        images: the model's (preprocessed) input tensor.
        grayscale: convert to one luminance channel.
        equalize: equalise each image's histogram.
        value_range: the range of the preprocessed pixel values (what `Equalization` bins).

    Returns:
        The filtered tensor (the input itself when neither is asked for).

    """
    if grayscale:
        images = keras.ops.image.rgb_to_grayscale(images)
    if equalize:
        images = Equalize(tuple(value_range), name="equalization")(images)
    return images


@keras.saving.register_keras_serializable(package="keras_l2t")
class Equalize(keras.layers.Layer):
    """`keras.layers.Equalization` as a model layer (Keras 3.15 calls it "part of a cycle" in a functional model).

    Args:
        value_range: (low, high) of the pixel values it bins.

    """

    def __init__(self, value_range=(0.0, 255.0), **kwargs):
        super().__init__(**kwargs)
        self.value_range = tuple(value_range)
        self.equalization = keras.layers.Equalization(value_range=self.value_range)

    def call(self, images):
        """Equalise each image's histogram."""
        return self.equalization(images)

    def compute_output_shape(self, input_shape):
        """The input's shape."""
        return input_shape

    def get_config(self) -> dict:
        """Its value range, for saving."""
        return {**super().get_config(), "value_range": self.value_range}


def augment_transforms(kind: str, native_size: int) -> tuple[str, ...]:
    """The transforms an augmentation name stands for, in the order they are applied.

    "auto" never changes what a class means: a random crop (pad 4, crop back) for images of 64 px or less, small
    rotations for larger photos, and no mirroring, which turns one class into another wherever a mirror image
    means something else (keep-left and keep-right signs, arrows, digits, text). Ask for "flip" where mirroring
    is harmless (the thesis and CIFAR presets use "crop,flip", L2T-ww's CIFAR recipe).

    Args:
        kind: "auto", "none", or a comma list of "crop", "flip", "rotation", "blur" (aliases: "crop_flip",
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
    to right, "rotation" turns by up to +-10 degrees (reflected borders), "blur" applies a 3x3 Gaussian blur of a
    random width (sigma up to 1 pixel; the course's traffic-sign recipe).

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

    functions = {"crop": crop, "flip": tf.image.stateless_random_flip_left_right, "rotation": rotation, "blur": _blur}

    def augment(image, seed):
        for name, own_seed in zip(transforms, tf.unstack(tf.random.split(seed, max(2, len(transforms)))), strict=False):
            image = functions[name](image, own_seed)
        return image

    return augment
