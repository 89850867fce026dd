"""The data of a tuning trial: the train and validation splits of a dataset, read without its test split.

Tuning never reads the test split by construction: `training_source` opens only `<root>/train` and
`<root>/validation` (or those TFDS splits), and `load_tuning_data` carves no test split from train.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_l2t.datasets import data, sources
from keras_l2t.networks import backbones
from keras_l2t.running import experiment
from keras_l2t.running.config import RunConfig

__all__ = ["load_tuning_data", "training_source"]


def training_source(dataset: str, *, data_dir=None, download: bool = False, image_size=None) -> sources.Source:
    """Read a dataset's train split (and validation split, if it has one), never opening its test split.

    Args:
        dataset: an image folder `<root>/{train,test}/<class>/*` (optionally `<root>/validation/`), or a TFDS name
            with a test split.
        data_dir: TFDS data directory.
        download: let TFDS download.
        image_size: the size images of mixed sizes are decoded to.

    Returns:
        A `sources.Source` without a test split.

    Raises:
        ValueError: the dataset has no test split of its own (its evaluation carves one from train by seed, and
            tuning could then train on images some evaluation seed tests on).

    """
    root = Path(os.fspath(dataset)).expanduser()
    if root.is_dir():
        if not (root / "train").is_dir() or not (root / "test").is_dir():
            raise ValueError(_NO_TEST.format(dataset=dataset))
        read = {
            split: sources.read_folder(root / split, image_size)
            for split in ("train", "validation")
            if (root / split).is_dir()
        }
        names = {split: source.class_names for split, source in read.items()}
        if len({tuple(value) for value in names.values()}) > 1:
            raise ValueError(f"The class folders of the splits of {dataset} differ: {names}.")
        splits = {split: source.splits["train"] for split, source in read.items()}
        files = {split: source.files["train"] for split, source in read.items()}
        return sources.Source(splits, names["train"], str(root), files)
    return _tfds_training_splits(str(dataset), data_dir, download, image_size)


_NO_TEST = (
    "Tuning needs a dataset with a test split of its own ({dataset} has none): without one, each evaluation seed "
    "carves its test images from train and tuning could train on them. Move some images to <root>/test/<class>/."
)


def _tfds_training_splits(name: str, data_dir, download: bool, image_size) -> sources.Source:
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        sources._download_and_prepare(builder)
    if "test" not in builder.info.splits:
        raise ValueError(_NO_TEST.format(dataset=name))
    splits = [split for split in ("train", "validation") if split in builder.info.splits]
    loaded = tfds.load(name, split=splits, data_dir=data_dir, download=False, as_supervised=True)
    arrays = {
        split: sources._tfds_split_to_arrays(dataset, image_size) for split, dataset in zip(splits, loaded, strict=True)
    }
    return sources.Source(arrays, list(builder.info.features["label"].names), name)


def load_tuning_data(config: RunConfig) -> data.Data:
    """A trial's data: like `experiment.load_data`, from `training_source` (no test split is read or carved)."""
    if config.resolved_family == "matching":
        experiment._check_same_preprocessing(config.source, config.target)
    image_size = config.image_size or backbones.spec(config.trained_network).default_size
    source = training_source(config.dataset, data_dir=config.data_dir, download=config.download, image_size=image_size)
    splits = data.load(
        source,
        backbone=config.trained_network,
        image_size=config.image_size,
        samples_per_class=config.samples_per_class,
        imbalanced=config.imbalanced,
        validation=config.validation,
        test_fraction=0,
        seed=config.seed,
        batch_size=config.batch_size,
        augment=config.augment,
        validation_groups=config.validation_groups,
    )
    if splits.validation is None:
        raise ValueError("Tuning needs a validation split: give validation (--validation) above 0.")
    return splits
