"""Splitting a training set: held-out splits carved per class (or in whole groups) and N images per class drawn.

Every draw is seeded, so the same seed gives the same validation split and subset to every strategy.
"""

from __future__ import annotations

import os
import re

import numpy as np

from keras_l2t.datasets.sources import Source


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


def _groups(dataset: Source, pattern: str | None) -> np.ndarray | None:
    """The group of each training image: the first match of `pattern` in its file name (None: no grouping)."""
    if pattern is None:
        return None
    if not dataset.files:
        raise ValueError("validation_groups needs an image folder: the groups come from the file names.")
    expression = re.compile(pattern)
    keys = []
    for path in dataset.files["train"]:
        found = expression.search(os.path.basename(path))
        if found is None:
            raise ValueError(f"validation_groups {pattern!r} does not match the file name {os.path.basename(path)!r}.")
        keys.append(found.group(1) if expression.groups else found.group(0))
    return np.asarray(keys)


def split_by_groups(labels: np.ndarray, groups: np.ndarray, counts, rng: np.random.Generator):
    """Draw about `counts[c]` images of each class c in whole groups (e.g. every frame of one physical object).

    Near-duplicates (frames of one sign, shots of one animal) then never sit on both sides of the split, so
    the held-out accuracy, and the early-stop point chosen on it, are not inflated by images seen in training.

    Returns:
        (chosen indices, the rest), both sorted.

    """
    chosen = []
    for label, count in enumerate(counts):
        members = np.flatnonzero(labels == label)
        names = np.unique(groups[members])
        taken = 0
        for name in rng.permutation(names):
            if taken >= count:
                break
            inside = members[groups[members] == name]
            chosen.append(inside)
            taken += len(inside)
        if taken == len(members):
            raise ValueError(f"Class {label} has too few groups to keep any for training; lower the split.")
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


def _check_training_left(labels: np.ndarray, left: np.ndarray, class_names: list[str], carved: dict) -> None:
    """Refuse held-out splits that leave a class without a training image."""
    remaining = np.bincount(labels[left], minlength=len(class_names))
    if carved and remaining.min() == 0:
        empty = int(np.argmin(remaining))
        asked = ", ".join(f"{split} {amount}" for split, amount in carved.items())
        raise ValueError(
            f"The held-out splits ({asked}) leave class {class_names[empty]!r} with no training image (of "
            f"{int(np.sum(labels == empty))}); ask for a smaller validation (or test) split."
        )


def carve_held_out(dataset: Source, test_fraction: float, validation, validation_groups: str | None, rng):
    """Carve the test and validation splits that the source lacks from its train split, per class.

    Args:
        dataset: the source.
        test_fraction: a fraction of train, or 0.
        validation: a fraction of train, a number of images, or 0.
        validation_groups: a file name pattern whose match is each image's group (see `split_by_groups`).
        rng: the seeded generator.

    Returns:
        (held-out splits name -> (images, labels), indices of the train split left for training).

    Raises:
        ValueError: a split that leaves a class without images, or without training images.

    """
    train_images, train_labels = dataset.splits["train"]
    held_out = {name: pair for name, pair in dataset.splits.items() if name != "train"}
    available = np.arange(len(train_labels))
    groups = _groups(dataset, validation_groups)
    carved = {}
    for split, amount in (("test", test_fraction), ("validation", validation)):
        if split not in held_out and amount:
            counts = _validation_counts(train_labels[available], amount)
            if groups is None:
                chosen, available_positions = split_per_class(train_labels[available], counts, rng)
            else:
                chosen, available_positions = split_by_groups(train_labels[available], groups[available], counts, rng)
            held_out[split] = (train_images[available[chosen]], train_labels[available[chosen]])
            available = available[available_positions]
            carved[split] = amount
    _check_training_left(train_labels, available, dataset.class_names, carved)
    return held_out, available
