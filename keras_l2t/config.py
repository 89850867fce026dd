"""RunConfig: everything that defines one run, checked when it is made, with its key and its name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

from keras_l2t import data, hardware, strategies
from keras_l2t.paths import RunPaths

__all__ = ["ALL_SAMPLES", "MAX_IMAGE_SIZE", "RunConfig", "parse_samples", "samples_label"]

_LEAST = {
    "epochs": 1, "batch_size": 1, "backup_every": 1, "seed": 0, "fine_tune_epochs": 0, "last_blocks": 1,
    "samples_per_class": 1, "image_size": 1, "patience": 1, "meta_every": 1,
    "validate_every": 1, "feature_views": 1, "meta_steps": 1, "meta_warmup": 0,
}  # fmt: skip
_OPTIONAL = ("samples_per_class", "image_size", "patience")
_NOT_IN_KEY = ("out", "verbose", "backup_every", "backup_seconds", "keep_model", "devices")  # how, not what
_KEY_SINCE = {
    "validate_every": 1,
    "feature_views": 10,
    "mixed_precision": None,
    "meta_steps": 1,
    "meta_warmup": 0,
    "meta_reach": None,
}  # fields added later: at these values (what runs did before) not in the key
ALL_SAMPLES = "all"  # how tables, file names and the command line spell samples_per_class=None
MAX_IMAGE_SIZE = 1024  # pixels a side: over 3x every network's default input (32 to 299), no memory blow-up


def samples_label(samples: int | None) -> int | str:
    """N as tables and run names show it: the number, or "all" for the whole training set."""
    return ALL_SAMPLES if samples is None else int(samples)


def parse_samples(value) -> int | None:
    """N from a table, a run name or the command line: a number, or None for "all" (or None)."""
    return None if value is None or str(value) == ALL_SAMPLES else int(value)


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one run.

    Args:
        strategy: a registered strategy (see `strategies.names()`).
        dataset: a TFDS name or an image folder.
        data_dir: TFDS data directory.
        download: let TFDS download the dataset.
        backbone: the classic strategies' backbone.
        weights: its pretrained weights (a named pretraining or a file).
        source: the matching methods' pretrained source backbone.
        source_weights: its weights.
        target: the matching methods' target backbone.
        family: "classic" or "matching"; None takes the strategy's own. `scratch` with "matching" trains the
            target from scratch with the matching methods' loop and schedule, for a fair comparison.
        samples_per_class: N training images per class; None for all.
        imbalanced: the last class gets N / 10 images.
        validation: the validation split carved from train (fraction or count).
        validation_groups: a regular expression for a group key in file names (`data.load`): near-duplicate
            images of one group stay on one side of the validation split.
        augment: the training augmentation (`data.augment_transforms`): "auto" never mirrors; "crop,flip" is
            L2T-ww's CIFAR recipe.
        seed: seeds the subset, the split, the initialisation and the shuffling.
        epochs: training epochs; None for the strategy's default (`strategies.Strategy.epochs`).
        batch_size: images per batch.
        image_size: input height and width; None for the network's default (matching: the stored size).
        learning_rate: None for the strategy's default.
        last_blocks: blocks trained by `fine_tune_last`.
        patience: early-stopping patience on validation accuracy, in epochs (rounded up to whole validations);
            None trains every epoch.
        validate_every: validate every this many epochs (and at the first and the last); the early-stop point
            is the best validated epoch (`callbacks.PeriodicValidation`).
        feature_views: a frozen backbone's (`feature_extraction`) features are computed once per training image,
            for this many augmented views when the data is augmented (`keras_l2t.features`).
        meta_every: L2T methods: the meta step every this many iterations (1, the reference, by default).
        meta_steps: L2T methods: meta steps per meta iteration, each on a fresh look-ahead (1, the reference).
        meta_warmup: L2T methods: meta steps on the first batch before the target trains (0, the reference).
        meta_reach: L2T methods: the meta rate becomes meta_reach / the run's meta steps, so that Adam can move a
            meta weight by about this much (`keras_l2t.meta_schedule`); None keeps the reference's 1e-4.
        fine_tune_epochs: two-phase recipe: after `epochs`, unfreeze the whole backbone for this many more.
        fine_tune_learning_rate: the rate of that second phase.
        devices: train on this many devices (GPUs, else logical CPU devices) or "all", under MirroredStrategy
            (`hardware.distribution`); `batch_size` is the global batch. Not in the key: N replicas take the
            1-device step (tested to 1e-4).
        mixed_precision: None (float32), "bfloat16" or "float16": Keras' mixed policy for the run
            (`hardware.precision`); L2T methods keep the source maps and the meta step in float32.
        out: the output folder.
        verbose: Keras' progress output (0 silent, 1 bar, 2 a line per epoch).
        backup_every: back the run up every this many epochs under `<out>/backup/<run name>/`; an interrupted
            run resumes from there when run again (see `backup.RunBackup`).
        backup_seconds: and no sooner than this many seconds after its previous backup (a crash then loses at
            most that much training, and short epochs do not spend their time saving).
        keep_model: save the validation-best model as `<out>/models/<run name>.keras` (the target network alone
            for matching methods) with its class names, input size and preprocessing (`inference.save_model`).

    """

    strategy: str
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    backbone: str | None = "squeezenet1_1"
    weights: str | None = "imagenet"
    source: str = "resnet32"
    source_weights: str | None = "tinyimagenet"
    target: str = "vgg9"
    family: str | None = None
    samples_per_class: int | None = None
    imbalanced: bool = False
    validation: float | int = 0.1
    validation_groups: str | None = None
    augment: str = "auto"
    seed: int = 0
    epochs: int | None = None
    batch_size: int = 64
    image_size: int | None = None
    learning_rate: float | None = None
    last_blocks: int = 2
    patience: int | None = None
    validate_every: int = 1
    feature_views: int = 10
    meta_every: int = 1
    meta_steps: int = 1
    meta_warmup: int = 0
    meta_reach: float | None = None
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    devices: int | str = 1
    mixed_precision: str | None = None
    out: str = "runs"
    verbose: int = 1
    backup_every: int = 1
    backup_seconds: float = 0.0
    keep_model: bool = True

    def __post_init__(self):
        if self.epochs is None:
            self.epochs = self.resolved.epochs
        for field, least in _LEAST.items():
            value = getattr(self, field)
            if value is None and field in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                flag = "--" + field.replace("_", "-")
                raise ValueError(f"{field} ({flag}) must be a whole number of at least {least}, got {value!r}.")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:  # before any image is allocated
            raise ValueError(
                f"image_size (--image-size) must be at most {MAX_IMAGE_SIZE}, got {self.image_size}: one decoded "
                f"image would take {3 * self.image_size**2 / 2**20:.0f} MB (the networks here default to 32 to 299)."
            )
        data.augment_transforms(self.augment, 32)  # an unknown transform fails here, before any work
        self.devices = hardware.parse_devices(self.devices)
        if self.mixed_precision is not None and self.mixed_precision not in hardware.PRECISIONS:
            raise ValueError(
                f"mixed_precision (--mixed-precision) must be one of {', '.join(hardware.PRECISIONS)} or None, "
                f"got {self.mixed_precision!r}."
            )
        if self.meta_reach is not None and (isinstance(self.meta_reach, bool) or not 0 < self.meta_reach < math.inf):
            raise ValueError(f"meta_reach (--meta-reach) must be a positive number, got {self.meta_reach!r}.")
        if self.learning_rate is not None and not (0 < self.learning_rate < float("inf")):
            raise ValueError(f"learning_rate (--learning-rate) must be a positive number, got {self.learning_rate!r}.")
        if isinstance(self.backup_seconds, bool) or not (0 <= self.backup_seconds < float("inf")):
            raise ValueError(f"backup_seconds must be a number of seconds >= 0, got {self.backup_seconds!r}.")
        if isinstance(self.validation, bool) or not (
            (isinstance(self.validation, float) and 0 <= self.validation < 1)
            or (isinstance(self.validation, int) and self.validation >= 0)
        ):
            raise ValueError(
                f"validation (--validation) must be a fraction in [0, 1) or a count of images, got {self.validation!r}."
            )

    @property
    def resolved(self) -> strategies.Strategy:
        """The strategy as this run trains it (`strategies.resolve`: family, default rate, meta or not)."""
        return strategies.resolve(self.strategy, self.family)

    @property
    def resolved_family(self) -> str:
        """The family this run trains with."""
        return self.resolved.family

    @property
    def trained_network(self) -> str:
        """The network that learns: the classic backbone, or the matching target."""
        return self.target if self.resolved_family == "matching" else self.backbone

    @property
    def network(self) -> str:
        """The networks, for tables: the backbone, or `source->target` (the target alone when nothing matches)."""
        if self.resolved_family == "matching" and self.strategy != "scratch":
            return f"{self.source}->{self.target}"
        return self.trained_network

    @property
    def key(self) -> str:
        """The SHA-1 (all 40 hex digits) of every field that changes the result (not where and how it is kept).

        Finished runs are matched by it, so it is never shortened: two configs of a grid share a key only if
        they are the same run. Rows of results files written before (6-digit keys, and configs without the
        augment, validation_groups and meta_every fields, whose defaults changed what a run does) are not
        matched: their runs are redone. Fields added since (`validate_every`, `feature_views`) enter the key only
        when they differ from what earlier runs did, so those runs keep their keys.
        """
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_IN_KEY}
        fields = {k: v for k, v in fields.items() if k not in _KEY_SINCE or v != _KEY_SINCE[k]}
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    @property
    def paths(self) -> RunPaths:
        """Where the run writes (`keras_l2t.paths`)."""
        return RunPaths(self.out, self.name)

    @property
    def name(self) -> str:
        """A unique, readable run name (its log folder): strategy, network, data, N, epochs, seed and `key`."""
        dataset = os.path.basename(os.path.normpath(self.dataset))
        samples = samples_label(self.samples_per_class)
        imbalance = "-imbalanced" if self.imbalanced else ""
        network = self.network.replace("->", "-")
        return f"{self.strategy}-{network}-{dataset}-n{samples}{imbalance}-e{self.epochs}-s{self.seed}-{self.key[:10]}"
