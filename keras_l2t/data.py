"""Datasets for training: `load()` gives train / validation / test `tf.data` pipelines from any source.

>>> from keras_l2t import data
>>> splits = data.load("cifar10", backbone="squeezenet1_1", image_size=64, samples_per_class=10, seed=0)
>>> model.fit(splits.train, validation_data=splits.validation)

Sources are TFDS names, image folders (see `sources.read_folder`) or in-memory arrays. The limited-data
protocol draws N images per class from what is left of train after the validation split, seeded, so the same
seed gives the same subset to every strategy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_l2t import backbones
from keras_l2t.sources import (  # noqa: F401  (re-exported readers)
    Source,
    from_arrays,
    list_image_folder,
    load_image_folder,
    read_folder,
    read_image,
    read_images,
    read_tfds,
)

AUGMENTATIONS = ("crop_flip", "flip_rotate", "none")
SPLIT_EVAL = ("validation", "test")


@dataclasses.dataclass
class Data:
    """The pipelines of one dataset, ready for `model.fit(train, validation_data=validation)`.

    Args:
        train: shuffled, augmented, batched (images, labels).
        validation: batched, not augmented; None when there is no validation split.
        test: batched, not augmented; None when the source has no test split.
        class_names: the class of each label value.
        counts: images per split, and per class in train ("train_per_class").
        image_size: the height and width the images are resized to.
        train_indices: which images of the source's train split form `train` (the seeded subset).
        preprocess: the function applied to [0, 255] images after resizing.

    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: list[str]
    counts: dict
    image_size: int
    train_indices: np.ndarray
    preprocess: Callable

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(image_size, image_size, 3), the shape a model built for this data takes."""
        return (self.image_size, self.image_size, 3)


def read(source, *, data_dir: str | None = None, download: bool = False, image_size: int | None = None) -> Source:
    """Read a dataset into memory, whatever its kind.

    Args:
        source: a `Source`; an image folder path; a TFDS name; (images, labels); or a dict of those by split.
        data_dir: TFDS data directory.
        download: allow TFDS to download.
        image_size: size to decode images of mixed sizes to.

    Returns:
        A `Source`.

    """
    if isinstance(source, Source):
        return source
    if isinstance(source, (tuple, list, dict)):
        return from_arrays(source)
    text = os.fspath(source)
    if Path(text).expanduser().exists() or os.sep in text or text.startswith("."):
        return read_folder(text, image_size)
    return read_tfds(text, data_dir=data_dir, download=download, image_size=image_size)


def imbalanced_counts(samples_per_class: int, num_classes: int, ratio: int = 10) -> list[int]:
    """Per-class counts of the imbalanced protocol: every class N images, the last class N / ratio.

    Args:
        samples_per_class: N.
        num_classes: how many classes.
        ratio: how much rarer the last class is.

    Returns:
        A list of counts, e.g. [100] * 9 + [10].

    """
    if samples_per_class < ratio or samples_per_class % ratio:
        raise ValueError(
            f"The imbalanced protocol keeps N / {ratio} images of the last class, so N must be a multiple of {ratio} "
            f"(got N = {samples_per_class}, which would not give {ratio}:1)."
        )
    return [samples_per_class] * (num_classes - 1) + [samples_per_class // ratio]


def split_per_class(labels: np.ndarray, counts, rng: np.random.Generator, class_names=None):
    """Draw a seeded, stratified subset of indices.

    Args:
        labels: the label of each image.
        counts: images to draw per class: an int for every class, or a sequence with one count per class.
        rng: the random generator (its state decides the subset).
        class_names: for messages.

    Returns:
        (chosen indices, the rest), both sorted.

    Raises:
        ValueError: a class holds fewer images than asked for.

    """
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if isinstance(counts, (int, np.integer)):
        counts = [int(counts)] * num_classes
    if len(counts) != num_classes:
        raise ValueError(f"Got {len(counts)} per-class counts for {num_classes} classes.")
    chosen = []
    for label, count in enumerate(counts):
        members = np.flatnonzero(labels == label)
        if count > len(members):
            name = class_names[label] if class_names else label
            raise ValueError(
                f"Class {name!r} holds {len(members)} training images, fewer than the {count} asked for; "
                "lower samples_per_class (or the validation split)."
            )
        chosen.append(rng.choice(members, count, replace=False))
    chosen = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, "int64")
    return chosen, np.setdiff1d(np.arange(len(labels)), chosen)


def _validation_counts(labels: np.ndarray, validation) -> list[int]:
    per_class = np.bincount(labels)
    if isinstance(validation, float):
        if not 0 <= validation < 1:
            raise ValueError(f"validation must be a fraction in [0, 1) or a count of images, got {validation}.")
        counts = [int(round(validation * count)) for count in per_class]
    else:
        share = int(validation) // len(per_class)
        counts = [share + (1 if label < int(validation) % len(per_class) else 0) for label in range(len(per_class))]
    if validation and min(counts) == 0:
        raise ValueError(
            f"A split of {validation} leaves a class with no images (classes hold {per_class.min()} to "
            f"{per_class.max()}); ask for at least {len(per_class)} images, or a larger fraction."
        )
    return counts


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


def augmenter(kind: str, native_size: int) -> Callable | None:
    """The per-image augmentation applied to [0, 255] images before resizing.

    Stateless: each call takes its own seed, so runs with the same seed see the same augmented batches even
    though `tf.data` augments images in parallel.

    Args:
        kind: "crop_flip" (pad 4 black pixels, random crop back, horizontal flip: L2T-ww's CIFAR recipe),
            "flip_rotate" (horizontal flip and rotations up to +-10 degrees, for photos), or "none".
        native_size: the images' stored height and width.

    Returns:
        A function (image, seed of shape (2,)) -> image, or None for "none".

    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {kind!r}; use one of {', '.join(AUGMENTATIONS)} or 'auto'.")
    if kind == "crop_flip":

        def crop_flip(image, seed):
            first, second = tf.unstack(tf.random.split(seed, 2))
            padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
            cropped = tf.image.stateless_random_crop(padded, (native_size, native_size, 3), first)
            return tf.image.stateless_random_flip_left_right(cropped, second)

        return crop_flip
    if kind == "flip_rotate":

        def flip_rotate(image, seed):
            first, second = tf.unstack(tf.random.split(seed, 2))
            angle = tf.random.stateless_uniform([], second, -np.pi / 18, np.pi / 18)
            return _rotation(tf.image.stateless_random_flip_left_right(image, first), angle)

        return flip_rotate
    return None


def _batches(images, labels, *, batch_size, image_size, preprocess, augment=None, shuffle_seed=None):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, seed: (augment(pair[0], seed), pair[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.batch(batch_size)

    def finish(x, y):
        x = tf.cast(x, "float32")
        if x.shape[1] != image_size or x.shape[2] != image_size:
            x = tf.image.resize(x, (image_size, image_size), antialias=image_size < x.shape[1])
        return preprocess(x), y

    return dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load(
    source,
    *,
    backbone: str | None = None,
    image_size: int | None = None,
    preprocess: Callable | None = None,
    samples_per_class: int | Sequence[int] | None = None,
    imbalanced: bool = False,
    validation: float | int = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 32,
    augment: str = "auto",
    data_dir: str | None = None,
    download: bool = False,
) -> Data:
    """Load a dataset as train / validation / test pipelines for a backbone.

    Args:
        source: a TFDS name ("cifar10", "cats_vs_dogs", ...), an image folder (`<root>/<split>/<class>/*`
            or `<root>/<class>/*`), (images, labels) arrays or a dict of them by split, or a `Source`.
        backbone: a registered backbone: its preprocessing and (unless `image_size`) its default size.
        image_size: resize images to this height and width (default: the backbone's, else the stored size).
        preprocess: maps [0, 255] float images to model inputs; default the backbone's (else x / 255).
        samples_per_class: N training images per class (seeded); a list gives one count per class; None
            keeps all.
        imbalanced: with `samples_per_class` N, keep only N / 10 images of the last class.
        validation: carved from train (stratified) unless the source has a validation split: a fraction,
            or a number of images (e.g. 5000 for CIFAR-10's 45,000 / 5,000); 0 for none.
        test_fraction: carved from train when the source has no test split.
        seed: decides the validation split, the subset and the shuffling.
        batch_size: images per batch.
        augment: "auto" (crop_flip for images of 64 px or less, else flip_rotate), or see `augmenter`.
        data_dir: TFDS data directory.
        download: let TFDS download.

    Returns:
        A `Data`.

    Raises:
        ValueError: unknown dataset or augmentation, N larger than a class holds, differing class sets.
        FileNotFoundError: missing folder, or a TFDS dataset not available offline.

    """
    spec = backbones.spec(backbone) if backbone else None
    if image_size is None and spec is not None:
        image_size = spec.default_size
    dataset = read(source, data_dir=data_dir, download=download, image_size=image_size)
    if len(dataset.class_names) < 2:
        raise ValueError(
            f"The dataset has {len(dataset.class_names)} class ({', '.join(dataset.class_names)}); classification "
            "needs at least two class folders (or labels)."
        )
    rng = np.random.default_rng(seed)
    train_images, train_labels = dataset.splits["train"]
    held_out = {name: pair for name, pair in dataset.splits.items() if name != "train"}
    available = np.arange(len(train_labels))
    for split, amount in (("test", test_fraction), ("validation", validation)):
        if split not in held_out and amount:
            carved, available_positions = split_per_class(
                train_labels[available], _validation_counts(train_labels[available], amount), rng
            )
            held_out[split] = (train_images[available[carved]], train_labels[available[carved]])
            available = available[available_positions]
    if samples_per_class is not None:
        counts = samples_per_class
        if imbalanced:
            counts = imbalanced_counts(int(samples_per_class), len(dataset.class_names))
        chosen, _ = split_per_class(train_labels[available], counts, rng, dataset.class_names)
        available = available[chosen]
    native_size = train_images.shape[1]
    image_size = image_size or native_size
    preprocess = preprocess or (spec.preprocess if spec is not None else (lambda x: x / 255.0))
    if augment == "auto":
        augment = "crop_flip" if native_size <= 64 else "flip_rotate"
    options = {"batch_size": batch_size, "image_size": image_size, "preprocess": preprocess}
    train = _batches(
        train_images[available],
        train_labels[available],
        augment=augmenter(augment, native_size),
        shuffle_seed=seed,
        **options,
    )
    evaluation = {split: _batches(*held_out[split], **options) if split in held_out else None for split in SPLIT_EVAL}
    counts = {split: len(held_out[split][1]) for split in held_out}
    counts["train"] = len(available)
    counts["train_per_class"] = np.bincount(train_labels[available], minlength=len(dataset.class_names)).tolist()
    return Data(
        train,
        evaluation["validation"],
        evaluation["test"],
        dataset.class_names,
        counts,
        image_size,
        available,
        preprocess,
    )
