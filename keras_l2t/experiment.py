"""One training run from a config: load data, build a strategy, fit with logs, evaluate, return the results.

>>> from keras_l2t.experiment import RunConfig, run
>>> result = run(RunConfig("feature_extraction", dataset="../shared/data/cats_vs_dogs",
...                        backbone="mobilenet_v2", weights="path/to/weights.h5", image_size=160, epochs=5))
>>> result["test_accuracy"], result["best_epoch"]

Each run writes TensorBoard logs to `<out>/tb/<run name>/` (Keras' curves plus the early-stop point) and its
per-epoch history to `<out>/history/<run name>.csv`, and backs itself up at epoch ends under
`<out>/backup/<run name>/`: run an interrupted config again and it resumes (the backup goes when it ends).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import time

import keras

from keras_l2t import backbones, data, strategies
from keras_l2t.callbacks import EarlyStopPoint, MetaWeightsLogger, RunBackup


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
        seed: seeds the subset, the split, the initialisation and the shuffling.
        epochs: training epochs.
        batch_size: images per batch.
        image_size: input height and width; None for the network's default (matching: the stored size).
        learning_rate: None for the strategy's default.
        last_blocks: blocks trained by `fine_tune_last`.
        patience: early-stopping patience on validation accuracy; None trains every epoch.
        fine_tune_epochs: two-phase recipe: after `epochs`, unfreeze the whole backbone for this many more.
        fine_tune_learning_rate: the rate of that second phase.
        out: the output folder.
        verbose: Keras' progress output (0 silent, 1 bar, 2 a line per epoch).
        backup_every: back the run up every this many epochs under `<out>/backup/<run name>/`; an interrupted
            run resumes from there when run again (see `callbacks.RunBackup`).

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
    seed: int = 0
    epochs: int = 15
    batch_size: int = 64
    image_size: int | None = None
    learning_rate: float | None = None
    last_blocks: int = 2
    patience: int | None = None
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    out: str = "runs"
    verbose: int = 1
    backup_every: int = 1

    @property
    def resolved_family(self) -> str:
        """The family this run trains with."""
        return self.family or strategies.spec(self.strategy).family

    @property
    def network(self) -> str:
        """The networks, for tables: the backbone, or `source->target`."""
        if self.resolved_family == "matching":
            return self.target if self.strategy == "scratch" else f"{self.source}->{self.target}"
        return self.backbone

    @property
    def key(self) -> str:
        """A short hash of every field that changes the result (not `out`, `verbose` or `backup_every`)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out", "verbose", "backup_every")}
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:6]

    @property
    def backup_dir(self) -> str:
        """Where the run backs itself up while it trains (`<out>/backup/<name>/`, one folder per phase)."""
        return os.path.join(self.out, "backup", self.name)

    @property
    def name(self) -> str:
        """A unique, readable run name (its log folder): strategy, network, data, N, epochs, seed and `key`."""
        dataset = os.path.basename(os.path.normpath(self.dataset))
        samples = "all" if self.samples_per_class is None else str(self.samples_per_class)
        imbalance = "-imbalanced" if self.imbalanced else ""
        network = self.network.replace("->", "-")
        return f"{self.strategy}-{network}-{dataset}-n{samples}{imbalance}-e{self.epochs}-s{self.seed}-{self.key}"


def load_data(config: RunConfig) -> data.Data:
    """Load the dataset of a run, preprocessed for its network.

    Args:
        config: the run.

    Returns:
        A `data.Data`.

    """
    network = config.target if config.resolved_family == "matching" else config.backbone
    if config.resolved_family == "matching":
        _check_same_preprocessing(config.source, config.target)
    return data.load(
        config.dataset,
        backbone=network,
        image_size=config.image_size,
        samples_per_class=config.samples_per_class,
        imbalanced=config.imbalanced,
        validation=config.validation,
        seed=config.seed,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        download=config.download,
    )


def _check_same_preprocessing(source: str, target: str) -> None:
    if backbones.spec(source).preprocess is not backbones.spec(target).preprocess:
        raise ValueError(
            f"Source {source!r} and target {target!r} expect different input preprocessing; feature matching feeds "
            "both the same images, so choose a pair that shares it (e.g. resnet32 and vgg9)."
        )


def build_model(config: RunConfig, splits: data.Data) -> keras.Model:
    """Build and compile the run's model for its data.

    Args:
        config: the run.
        splits: its data (gives the number of classes, input shape and steps per epoch).

    Returns:
        A compiled model.

    """
    return strategies.build(
        config.strategy,
        num_classes=splits.num_classes,
        backbone=config.backbone,
        weights=config.weights,
        input_shape=splits.input_shape,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        steps_per_epoch=int(splits.train.cardinality()),
        last_blocks=config.last_blocks,
        source=config.source,
        source_weights=config.source_weights,
        target=config.target if config.resolved_family == "matching" else None,
    )


def _history_file(config: RunConfig, phase: str = "") -> str:
    return os.path.join(config.out, "history", config.name + phase + ".csv")


def _callbacks(
    config: RunConfig, model: keras.Model, splits: data.Data, phase: str = ""
) -> tuple[list, EarlyStopPoint | None, RunBackup]:
    log_dir = os.path.join(config.out, "tb", config.name + phase)
    history_file = _history_file(config, phase)
    os.makedirs(os.path.dirname(history_file), exist_ok=True)
    early_stop = EarlyStopPoint(log_dir, patience=config.patience) if splits.validation is not None else None
    backup_dir = os.path.join(config.backup_dir, phase.strip("-") or "train")
    backup = RunBackup(backup_dir, early_stop, every=config.backup_every)
    resumed = backup.saved_epoch()
    if resumed:
        _truncate_history(history_file, resumed)
        print(f"{config.name}{phase}: resuming from its backup after epoch {resumed}", flush=True)
    callbacks = [keras.callbacks.TensorBoard(log_dir), keras.callbacks.CSVLogger(history_file, append=bool(resumed))]
    callbacks += [early_stop] if early_stop else []
    callbacks += strategies.callbacks(model, config.epochs)
    if getattr(model, "phi", None) and splits.validation is not None:
        examples = next(iter(splits.validation))[0][:8]
        callbacks.append(MetaWeightsLogger(examples, os.path.join(log_dir, "meta")))
    return callbacks + [backup], early_stop, backup


def _truncate_history(history_file: str, epochs: int) -> None:
    """Keep the header and the first `epochs` rows (an interrupted run may have logged an unsaved epoch)."""
    if os.path.exists(history_file):
        with open(history_file) as file:
            lines = file.readlines()[: epochs + 1]
        with open(history_file, "w") as file:
            file.writelines(lines)


def _read_history(history_file: str) -> dict[str, list[float]]:
    with open(history_file, newline="") as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _fit(config: RunConfig, model: keras.Model, splits: data.Data, epochs: int, phase: str = "") -> dict:
    callbacks, early_stop, backup = _callbacks(config, model, splits, phase)
    monitor = splits.validation is not None
    model.fit(
        splits.train,
        validation_data=splits.validation,
        epochs=epochs,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles
    )
    history = _read_history(_history_file(config, phase))  # every epoch, those before a resume included
    earlier_seconds = backup.restored_seconds  # time spent before an interruption, up to its last backup
    point = early_stop.result() if monitor else {"best_epoch": len(history["loss"]), "stopped_epoch": None}
    best = (point["best_epoch"] or len(history["loss"])) - 1
    return {
        "epochs_run": len(history["loss"]),
        "best_epoch": best + 1,
        "train_accuracy": float(history["accuracy"][best]),
        "validation_accuracy": float(history["val_accuracy"][best]) if monitor else None,
        "earlier_seconds": earlier_seconds,
    }


def run(config: RunConfig, splits: data.Data | None = None) -> dict:
    """Train and evaluate one run.

    Args:
        config: the run.
        splits: its data, if already loaded (otherwise `load_data(config)`).

    Returns:
        A flat dict: the config's fields, `run`, `network`, `num_train`, `epochs_run`, `best_epoch` (the
        early-stop point, 1-based), `train_accuracy` (at that epoch, on augmented batches),
        `validation_accuracy`, `test_accuracy` (of the weights of the best epoch), `wall_seconds` (a resumed run
        adds its earlier attempts' time up to their last backup); with
        `fine_tune_epochs`, also `test_accuracy_before_fine_tune`.

    """
    started = time.time()
    keras.utils.set_random_seed(config.seed)  # before the pipelines: their augmentation ops take seeds from it
    splits = splits or load_data(config)
    model = build_model(config, splits)
    result = _fit(config, model, splits, config.epochs)
    if config.fine_tune_epochs:
        result["test_accuracy_before_fine_tune"] = _test_accuracy(model, splits)
        strategies.unfreeze(model, learning_rate=config.fine_tune_learning_rate)
        fine_tuned = _fit(config, model, splits, config.fine_tune_epochs, phase="-fine_tune")
        fine_tuned["earlier_seconds"] += result["earlier_seconds"]
        result.update({key: value for key, value in fine_tuned.items() if key != "epochs_run"})
        result["epochs_run"] += fine_tuned["epochs_run"]
        result["best_epoch"] += config.epochs
    result["test_accuracy"] = _test_accuracy(model, splits)
    result["wall_seconds"] = round(time.time() - started + result.pop("earlier_seconds"), 1)
    shutil.rmtree(config.backup_dir, ignore_errors=True)
    return {
        **dataclasses.asdict(config),
        "run": config.name,
        "key": config.key,
        "network": config.network,
        "num_train": splits.counts["train"],
        **result,
    }


def _test_accuracy(model: keras.Model, splits: data.Data) -> float | None:
    if splits.test is None:
        return None
    return float(model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"])
