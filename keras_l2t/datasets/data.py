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

from keras_l2t.datasets.augment import augmenter
from keras_l2t.datasets.image_files import check_memory, check_pixels
from keras_l2t.datasets.sources import (
    Source,
    from_arrays,
    read_folder,
    read_tfds,
)
from keras_l2t.datasets.splits import (
    carve_held_out,
    imbalanced_counts,
    split_per_class,
)
from keras_l2t.networks import backbones

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
        augmented: whether `train` is augmented (each pass over it differs).

    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: list[str]
    counts: dict
    image_size: int
    train_indices: np.ndarray
    preprocess: Callable
    augmented: bool = False

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


def evaluation_batch_size(batch_size: int, image_size: int) -> int:
    """Images per batch of the validation and test pipelines: larger than training's for small images.

    Inference needs no gradients, and on a CPU a larger batch runs faster per image (vgg9 at 32 px, 1,000 images:
    1.4 s at 500 a batch, 1.8 to 2.6 s at 128); at most 2^19 pixels a batch beyond the training batch size.
    """
    return max(batch_size, min(1024, 2**19 // (image_size * image_size)))


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
    validation_groups: str | None = None,
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
        batch_size: images per training batch (validation and test: `evaluation_batch_size`).
        augment: "auto" (a crop for images of 64 px or less, small rotations for photos; never a mirror), "none",
            or a comma list of "crop", "flip", "rotation" (see `augment_transforms`).
        validation_groups: for image folders, a regular expression whose first match (or first group) in a
            file name is the image's group: validation and test are then carved in whole groups (see
            `split_by_groups`), e.g. "^([0-9]+)_" for GTSRB's `<track>_<frame>.ppm`. A `<root>/validation/`
            folder is used as it is.
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
    if image_size is not None:
        check_pixels(image_size, image_size, f"image_size {image_size}")
    dataset = read(source, data_dir=data_dir, download=download, image_size=image_size)
    if len(dataset.class_names) < 2:
        raise ValueError(
            f"The dataset has {len(dataset.class_names)} class ({', '.join(dataset.class_names)}); classification "
            "needs at least two class folders (or labels)."
        )
    rng = np.random.default_rng(seed)
    train_images, train_labels = dataset.splits["train"]
    held_out, available = carve_held_out(dataset, test_fraction, validation, validation_groups, rng)
    if samples_per_class is not None:
        counts = samples_per_class
        if imbalanced:
            counts = imbalanced_counts(int(samples_per_class), len(dataset.class_names))
        chosen, _ = split_per_class(train_labels[available], counts, rng, dataset.class_names)
        available = available[chosen]
    native_size = train_images.shape[1]
    image_size = image_size or native_size
    preprocess = preprocess or (spec.preprocess if spec is not None else (lambda x: x / 255.0))
    options = {"image_size": image_size, "preprocess": preprocess}
    augment = augmenter(augment, native_size)
    train = _batches(
        train_images[available],
        train_labels[available],
        augment=augment,
        shuffle_seed=seed,
        batch_size=batch_size,
        **options,
    )
    options["batch_size"] = evaluation_batch_size(batch_size, image_size)
    check_memory(
        max(batch_size, options["batch_size"]) * image_size * image_size * 3 * 4,
        f"A batch of {max(batch_size, options['batch_size'])} images at {image_size} x {image_size} (float32)",
        "use a smaller image size or batch size",
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
        augmented=augment is not None,
    )
