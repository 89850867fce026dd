"""Callbacks: the early-stop point of a run, and what the L2T meta-networks decide, in TensorBoard."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf


def entropy(weights) -> tf.Tensor:
    """Mean Shannon entropy (nats) of rows of channel weights that sum to 1.

    Args:
        weights: (B, C) probabilities.

    Returns:
        The entropy averaged over the batch; log(C) means uniform, 0 means one channel.
    """
    return tf.reduce_mean(-tf.reduce_sum(weights * tf.math.log(weights + 1e-12), axis=-1))


class MetaWeightsLogger(keras.callbacks.Callback):
    """Log each pair's where weight (lambda), what entropy (w) and which maps (gamma) for a fixed batch.

    Runs eagerly at epoch ends, never inside the compiled train_step. Scalars `where/pair_k` (mean lambda)
    and `what_entropy/pair_k`; histograms `what/pair_k`; for L2T-www images `which/pair_k` (gamma of the
    first images, averaged over channels, scaled to [0, 1]).

    Args:
        inputs: a fixed, preprocessed batch to evaluate the meta-networks on.
        log_dir: the TensorBoard run folder; events go to `<log_dir>/meta`.
        images: how many gamma maps to log per pair.
    """

    def __init__(self, inputs, log_dir: str, images: int = 3):
        super().__init__()
        self.inputs, self.images = inputs, images
        self.log_dir = os.path.join(log_dir, "meta")
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if not model.pairs:
            return
        source_maps = model.source_maps(self.inputs)
        with self.writer.as_default(step=epoch):
            for index, (what, where, which) in enumerate(model.meta_weights(source_maps)):
                pair = model.pairs[index]
                label = f"pair_{index}_s{pair[0]}_t{pair[1]}"
                if where is not None:
                    tf.summary.scalar(f"where/{label}", tf.reduce_mean(where))
                if what is not None:
                    tf.summary.scalar(f"what_entropy/{label}", entropy(what))
                    tf.summary.histogram(f"what/{label}", what)
                if which is not None:
                    maps = tf.reduce_mean(which[: self.images], axis=-1, keepdims=True)
                    scaled = maps / (tf.reduce_max(maps, axis=(1, 2, 3), keepdims=True) + 1e-12)
                    tf.summary.image(f"which/{label}", scaled, max_outputs=self.images)
        self.writer.flush()


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Read the scalar summaries of a TensorBoard folder (tests, notebooks, plots).

    Args:
        log_dir: a folder holding `events.out.tfevents.*` files (searched recursively).

    Returns:
        tag -> [(step, value), ...] in file order.
    """
    scalars: dict[str, list[tuple[int, float]]] = {}
    for folder, _, files in os.walk(log_dir):
        for name in sorted(f for f in files if f.startswith("events.out.tfevents")):
            for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                        number = float(np.asarray(tf.make_ndarray(value.tensor)))
                        scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


class PeriodicValidation(keras.callbacks.Callback):
    """Validate every `every` epochs (and at the first and last epoch of a `fit`), adding `val_*` to the logs.

    Replaces `fit(validation_data=...)`, which validates every epoch: on a small training set one validation pass
    costs more than the epoch's training steps. Put it first in `fit`'s callbacks, so that the others (the
    `EarlyStopPoint`, TensorBoard, the CSV history) see the `val_*` values of the epochs it validates; the other
    epochs have none (the CSV history writes NA). The early-stop point is then exact at that resolution: the
    best validated epoch, whose weights are restored.

    Args:
        validation: the batched validation data.
        every: validate after every this many epochs.
    """

    def __init__(self, validation, every: int = 1):
        super().__init__()
        self.validation, self.every = validation, every
        self._first = None

    def validates(self, epoch: int) -> bool:
        """Whether 0-based `epoch` is validated."""
        return epoch == self._first or (epoch + 1) % self.every == 0 or epoch + 1 == self.params["epochs"]

    def on_epoch_begin(self, epoch, logs=None):
        self._first = epoch if self._first is None else self._first

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.validates(epoch):
            values = self.model.evaluate(self.validation, verbose=0, return_dict=True)
            logs.update({f"val_{name}": float(value) for name, value in values.items()})


class EarlyStopPoint(keras.callbacks.EarlyStopping):
    """Early stopping on a validation metric that records the best epoch (the early-stop point).

    At each epoch end it writes `early_stop/best_epoch` (1-based) and `early_stop/best_<metric>` to
    `<log_dir>/validation`, beside Keras' own TensorBoard curves, and a text summary when training ends.
    With `patience=None` it never stops training but still records (and restores) the best epoch.

    Args:
        log_dir: the run's TensorBoard directory; None writes nothing.
        monitor: the metric, e.g. "val_accuracy" (maximised) or "val_loss" (minimised).
        patience: validations without improvement before stopping (epochs, when every epoch is validated);
            None to train to the end.
        restore_best_weights: leave the model at its best epoch when training ends.

    """

    def __init__(
        self,
        log_dir: str | None = None,
        monitor: str = "val_accuracy",
        patience: int | None = None,
        restore_best_weights: bool = True,
    ):
        mode = "min" if monitor.endswith("loss") else "max"
        super().__init__(
            monitor=monitor,
            mode=mode,
            patience=patience if patience is not None else 2**31,
            restore_best_weights=restore_best_weights,
        )
        self.log_dir = log_dir
        self._writer = None

    def _write(self, function, *args, step: int) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "validation"))
        with self._writer.as_default():
            function(*args, step=step)
        self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.monitor not in logs:
            return  # an epoch `PeriodicValidation` does not validate: patience counts validations
        super().on_epoch_end(epoch, logs)
        if self.best is not None:
            self._write(tf.summary.scalar, "early_stop/best_epoch", self.best_epoch + 1, step=epoch)
            self._write(tf.summary.scalar, f"early_stop/best_{self.monitor}", float(self.best), step=epoch)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        summary = self.result()
        if summary["best_epoch"] is not None:
            text = f"best epoch {summary['best_epoch']} ({self.monitor} {summary['best_value']:.4f})" + (
                f", stopped after epoch {summary['stopped_epoch']}" if summary["stopped_epoch"] else ""
            )
            self._write(tf.summary.text, "early_stop", text, step=summary["best_epoch"] - 1)

    def result(self) -> dict:
        """The early-stop point.

        Returns:
            {"best_epoch": 1-based epoch or None, "best_value": the monitored value there, "stopped_epoch":
            1-based epoch at which patience ran out, or None}.

        """
        found = self.best is not None
        return {
            "best_epoch": self.best_epoch + 1 if found else None,
            "best_value": float(self.best) if found else None,
            "stopped_epoch": self.stopped_epoch + 1 if self.stopped_epoch else None,
        }


def write_hparams(log_dir: str, trial: str, config: dict, result: dict) -> None:
    """Record a run's config and final metrics for TensorBoard's HParams dashboard.

    Args:
        log_dir: the run's TensorBoard folder.
        trial: the run's name.
        config: its settings (values that are not bool, int, float or str are written as text).
        result: its results; the accuracies, best epoch and seconds become `hparams/<metric>` scalars.

    """
    from tensorboard.plugins.hparams import api as hparams_api

    values = {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in config.items()}
    with tf.summary.create_file_writer(log_dir).as_default():
        hparams_api.hparams(values, trial_id=trial)
        for metric in ("test_accuracy", "validation_accuracy", "train_accuracy", "best_epoch", "wall_seconds"):
            if result.get(metric) is not None:
                tf.summary.scalar(f"hparams/{metric}", float(result[metric]), step=0)
