"""One training run from a config: load data, build a strategy, fit with logs, evaluate, return the results.

>>> from keras_l2t.running.config import RunConfig
>>> from keras_l2t.running.experiment import run
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
import json
import math
import os
import shutil
import time

import keras
import numpy as np

from keras_l2t.core import hardware
from keras_l2t.core.paths import FINE_TUNE
from keras_l2t.datasets import data
from keras_l2t.networks import backbones
from keras_l2t.running import inference
from keras_l2t.running.backup import RunBackup
from keras_l2t.running.config import RunConfig
from keras_l2t.running.trajectories import (
    GammaSnapshots,
    WeightTrajectory,
    examples_of_distinct_classes,
    snapshot_epochs,
)
from keras_l2t.training import features, freezing, strategies
from keras_l2t.training.callbacks import EarlyStopPoint, MetaWeightsLogger, PeriodicValidation
from keras_l2t.training.l2t import L2TModel
from keras_l2t.training.meta_health import MetaHealth


def load_data(config: RunConfig) -> data.Data:
    """Load the dataset of a run, preprocessed for its network.

    Args:
        config: the run.

    Returns:
        A `data.Data`.

    """
    if config.resolved_family == "matching":
        _check_same_preprocessing(config.source, config.target)
    return data.load(
        config.dataset,
        backbone=config.trained_network,
        image_size=config.image_size,
        samples_per_class=config.samples_per_class,
        imbalanced=config.imbalanced,
        validation=config.validation,
        seed=config.seed,
        batch_size=config.batch_size,
        augment=config.augment,
        validation_groups=config.validation_groups,
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
        family=config.family,
        backbone=config.backbone,
        weights=config.weights,
        input_shape=splits.input_shape,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        steps_per_epoch=int(splits.train.cardinality()),
        last_blocks=config.last_blocks,
        source=config.source,
        source_weights=config.source_weights,
        target=config.target,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        matching_weight=config.matching_weight,
        dropout=config.dropout,
        head_init=config.head_init,
        grayscale=config.grayscale,
        equalize=config.equalize,
        **(_meta_options(config) if config.resolved.meta else {}),
    )


def _meta_options(config: RunConfig) -> dict:
    return {name: getattr(config, name) for name in ("meta_every", "meta_steps", "meta_warmup", "meta_reach")}


def _callbacks(
    config: RunConfig, model: keras.Model, splits: data.Data, phase: str = ""
) -> tuple[list, EarlyStopPoint | None, RunBackup]:
    paths = config.paths
    log_dir, history_file = paths.tensorboard(phase), paths.history(phase)
    os.makedirs(os.path.dirname(history_file), exist_ok=True)
    validation = splits.validation
    patience = config.patience and math.ceil(config.patience / config.validate_every)  # in validations
    early_stop = EarlyStopPoint(log_dir, patience=patience) if validation is not None else None
    backup = RunBackup(paths.backup(phase), early_stop, every=config.backup_every, seconds=config.backup_seconds)
    resumed = backup.saved_epoch()
    if resumed:
        _truncate_history(history_file, resumed)
        _truncate_history(paths.trajectory(phase), resumed + 1)  # its first row is the initialisation
        print(f"{config.name}{phase}: resuming from its backup after epoch {resumed}", flush=True)
    else:  # from the first epoch: curves of an earlier attempt (its backup discarded) would mix with these
        shutil.rmtree(log_dir, ignore_errors=True)
    callbacks = [PeriodicValidation(validation, config.validate_every)] if validation is not None else []
    callbacks += [keras.callbacks.TensorBoard(log_dir), keras.callbacks.CSVLogger(history_file, append=bool(resumed))]
    callbacks += [early_stop] if early_stop else []
    examples = examples_of_distinct_classes(validation, 8) if config.resolved.meta and validation is not None else None
    # with TerminateOnNaN (a diverged run stops) and, for L2T, the meta health check on the examples
    callbacks += strategies.callbacks(
        model, config.epochs, probe=examples, log_dir=log_dir, warmup_epochs=config.warmup_epochs
    )
    callbacks.append(WeightTrajectory(paths.trajectory(phase), append=bool(resumed)))
    if examples is not None:
        callbacks.append(MetaWeightsLogger(examples, log_dir))
        kept = snapshot_epochs(config.epochs)
        callbacks.append(GammaSnapshots(examples[:4], paths.gamma, kept, append=bool(resumed)))
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
    return {key: [_number(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _number(text: str) -> float:
    """A history value; NA (an epoch without validation) is NaN."""
    return math.nan if text in ("NA", "") else float(text)


def _fit(config: RunConfig, model: keras.Model, splits: data.Data, epochs: int, phase: str = "", extra=()) -> dict:
    callbacks, early_stop, backup = _callbacks(config, model, splits, phase)
    callbacks += list(extra)  # last: they see the validated epoch's val_* (tuning's pruning stops training there)
    monitor = splits.validation is not None
    model.fit(
        splits.train.repeat(),  # one iterator for the whole run: no pipeline restart at each epoch
        steps_per_epoch=int(splits.train.cardinality()),  # each repetition reshuffles (and re-augments)
        epochs=epochs,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles
    )
    history = _read_history(config.paths.history(phase))  # every epoch, those before a resume included
    earlier_seconds = backup.restored_seconds  # time spent before an interruption, up to its last backup
    point = early_stop.result() if monitor else {"best_epoch": len(history["loss"]), "stopped_epoch": None}
    best = (point["best_epoch"] or len(history["loss"])) - 1
    diverged = next((epoch + 1 for epoch, loss in enumerate(history["loss"]) if not math.isfinite(loss)), None)
    if diverged:
        print(f"{config.name}{phase}: the training loss became {history['loss'][diverged - 1]} in epoch {diverged};"
              " training stopped (recorded as diverged)", flush=True)  # fmt: skip
    health = next((callback.result for callback in callbacks if isinstance(callback, MetaHealth)), None)
    return {
        "meta_health": json.dumps(health) if health else None,
        "epochs_run": len(history["loss"]),
        "diverged_epoch": diverged,
        "best_epoch": best + 1,
        "train_accuracy": float(history["accuracy"][best]),
        "validation_accuracy": float(history["val_accuracy"][best]) if monitor else None,
        "earlier_seconds": earlier_seconds,
    }


def run(config: RunConfig, splits: data.Data | None = None, *, keep_backup: bool = False, callbacks=()) -> dict:
    """Train and evaluate one run.

    Args:
        config: the run.
        splits: its data, if already loaded (otherwise `load_data(config)`).
        keep_backup: leave the backup for the caller to remove once the result is safely recorded (the grid
            does, after writing the row), so that no moment exists at which a kill loses a finished run.
        callbacks: more Keras callbacks for `fit`, after the run's own (tuning's pruning: `keras_l2t.running.tuning`).

    Returns:
        A flat dict: the config's fields, `run`, `network`, `num_train`, `epochs_run`, `best_epoch` (the
        early-stop point, 1-based), `train_accuracy` (at that epoch, on augmented batches),
        `validation_accuracy`, `test_accuracy` (of the weights of the best epoch), `wall_seconds` (a resumed run
        adds its earlier attempts' time up to their last backup), `meta_health` (L2T runs: JSON of
        `meta_health.MetaHealth.result`, how far the meta-networks moved; None otherwise); with
        `fine_tune_epochs`, also `test_accuracy_before_fine_tune`.

    """
    started = time.time()
    keras.utils.set_random_seed(config.seed)  # before the pipelines: their augmentation ops take seeds from it
    splits = splits or load_data(config)
    with hardware.precision(config.mixed_precision), hardware.distribution(config.devices, config.batch_size).scope():
        result, model = _train(config, splits, callbacks)
    if config.keep_model:
        _keep(config, model, splits, result)
    result["wall_seconds"] = round(time.time() - started + result.pop("earlier_seconds"), 1)
    if not keep_backup:
        shutil.rmtree(config.paths.backup_root, ignore_errors=True)
    return {
        **dataclasses.asdict(config),
        "run": config.name,
        "key": config.key,
        "network": config.network,
        "num_train": splits.counts["train"],
        **result,
    }


def _train(config: RunConfig, splits: data.Data, callbacks=()) -> tuple[dict, keras.Model]:
    """Build, fit (both phases) and test the run's model; under the run's precision and devices."""
    model = build_model(config, splits)
    result = _fit(config, *_trained_part(config, model, splits), config.epochs, extra=callbacks)
    if config.fine_tune_epochs:
        result["test_accuracy_before_fine_tune"] = _test_accuracy(model, splits)
        freezing.unfreeze(model, learning_rate=config.fine_tune_learning_rate)
        fine_tuned = _fit(config, model, splits, config.fine_tune_epochs, phase=FINE_TUNE, extra=callbacks)
        fine_tuned["earlier_seconds"] += result["earlier_seconds"]
        diverged = fine_tuned.pop("diverged_epoch")
        result.update({key: value for key, value in fine_tuned.items() if key != "epochs_run"})
        result["diverged_epoch"] = result["diverged_epoch"] or (diverged and diverged + result["epochs_run"])
        result["epochs_run"] += fine_tuned["epochs_run"]
        result["best_epoch"] += config.epochs
    result.update(_test_results(config, model, splits))
    return result, model


def _trained_part(config: RunConfig, model: keras.Model, splits: data.Data) -> tuple[keras.Model, data.Data]:
    """What `fit` trains: the model on its data, or, for a frozen backbone, its head on cached features."""
    if features.frozen_backbone(model) is None:
        return model, splits
    head = features.head_training(
        model, splits, views=config.feature_views, seed=config.seed, batch_size=config.batch_size
    )
    if config.verbose:
        counted = f"{splits.counts['train']} training images ({head.views} view{'s' if head.views > 1 else ''})"
        print(f"{config.name}: frozen backbone features of {counted} and validation in {head.seconds:.1f} s")
    return head.model, head.splits


def _keep(config: RunConfig, model: keras.Model, splits: data.Data, result: dict) -> None:
    """Save the run's model (its validation-best weights) with what is needed to use it."""
    network = model.target if isinstance(model, L2TModel) else getattr(model, "network", model)
    inference.save_model(
        network,
        config.paths.model,
        class_names=splits.class_names,
        image_size=splits.image_size,
        network=config.trained_network,
        strategy=config.strategy,
        run=config.name,
        **{key: result.get(key) for key in ("best_epoch", "validation_accuracy", "test_accuracy")},
    )


def _test_results(config: RunConfig, model: keras.Model, splits: data.Data) -> dict:
    """Test accuracy, per-class accuracy (JSON, by class name) and the confusion matrix, from one pass."""
    if splits.test is None:
        return {"test_accuracy": None, "per_class_accuracy": None}
    classes = splits.num_classes
    confusion = np.zeros((classes, classes), "int64")  # rows: true class, columns: predicted class
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in splits.test])  # the test split is not shuffled
    predicted = np.asarray(model.predict(splits.test, verbose=0)).argmax(axis=1)  # (predict_on_batch: every replica)
    np.add.at(confusion, (labels, predicted), 1)
    os.makedirs(os.path.dirname(config.paths.confusion), exist_ok=True)
    with open(config.paths.confusion, "w") as file:
        json.dump({"class_names": splits.class_names, "confusion": confusion.tolist()}, file)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": float(confusion.trace() / confusion.sum()),
        "per_class_accuracy": json.dumps(dict(zip(splits.class_names, np.round(per_class, 4).tolist(), strict=True))),
    }


def _test_accuracy(model: keras.Model, splits: data.Data) -> float | None:
    if splits.test is None:
        return None
    return float(model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"])
