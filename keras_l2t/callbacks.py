"""Callbacks: the early-stop point of a run, and what the L2T meta-networks decide, in TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile

import h5py
import keras
import numpy as np
import tensorflow as tf

from keras_l2t import keras_internals


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


class RunBackup(keras.callbacks.Callback):
    """Back a run up at epoch ends and resume it after an interruption, early-stop point included.

    Like `keras.callbacks.BackupAndRestore` (the model's weights and every optimizer's state, L2TModel's meta
    optimizer too, and the epoch), plus the state of an `EarlyStopPoint` (best value, best epoch, patience
    count, best weights) and whether early stopping already ended the run. A save writes epoch-numbered files,
    then `state.json` by an atomic rename, then removes older files: an interruption at any moment leaves a
    consistent backup. A resumed run goes on from the saved epoch; its data order restarts from the seed, so it
    equals an uninterrupted run statistically, not bit for bit; `restored_seconds` is the training time the
    backup stands for, so that a resumed run can report its whole cost. Put it after the `EarlyStopPoint` in `fit`'s
    callbacks, so that both have finished an epoch before it is saved.

    Args:
        backup_dir: the run's backup folder (deleted by the caller when the run's results are safe).
        early_stop: the run's `EarlyStopPoint`, if any.
        every: save every this many epochs (and at the last one).
        seconds: and no sooner than this many seconds after the previous save (a save of vgg9 with its optimizer
            state takes about 1 s here, more than one of its epochs at N = 10).
    """

    def __init__(self, backup_dir: str, early_stop: EarlyStopPoint | None = None, every: int = 1, seconds: float = 0.0):
        super().__init__()
        self.backup_dir, self.early_stop, self.every, self.seconds = backup_dir, early_stop, every, seconds
        self.state_file = os.path.join(backup_dir, "state.json")
        self.restored_seconds = 0.0  # training time of the earlier attempts, up to their last backup
        self._started = time.time()

    def saved_epoch(self) -> int:
        """Epochs the backup holds (0 when there is none).

        Returns:
            The number of finished epochs saved.
        """
        state = self._read()
        return state["epoch"] if state else 0

    def _read(self) -> dict | None:
        """The backup's state, or None; a backup that cannot be used is discarded with a message."""
        if not os.path.exists(self.state_file):
            return None
        try:
            with open(self.state_file) as file:
                state = json.load(file)
            if not isinstance(state, dict) or not {"epoch", "weights", "finished"} <= set(state):
                raise ValueError("state.json lacks the epoch, weights or finished entries")
            files = [state["weights"], (state.get("early_stop") or {}).get("best_weights")]
            for name in filter(None, files):
                path = os.path.join(self.backup_dir, name)
                readable = h5py.is_hdf5(path) if name.endswith(".h5") else zipfile.is_zipfile(path)
                if not readable:
                    raise ValueError(f"{name} is missing or damaged")
            return state
        except (OSError, ValueError) as error:  # a JSON error is a ValueError
            print(
                f"{self.backup_dir}: the backup cannot be used ({error}); it is discarded and the run starts again "
                "from its first epoch.",
                flush=True,
            )
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            return None

    def on_train_begin(self, logs=None):
        state = self._read()
        keras_internals.set_initial_epoch(self.model, None)  # never carry one over from an earlier fit
        self._remove_unreferenced(state)
        self._started, self.restored_seconds = time.time(), 0.0
        self._saved_at = self._started
        if state is None:
            return
        self.restored_seconds = state.get("seconds", 0.0)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        except Exception as error:  # e.g. a backup of another model written to the same folder
            raise RuntimeError(
                f"The backup in {self.backup_dir} does not fit this run ({error}); delete that folder to start the "
                "run again from its first epoch."
            ) from error
        keras_internals.set_initial_epoch(self.model, self.params["epochs"] if state["finished"] else state["epoch"])
        if self.early_stop is not None and state.get("early_stop"):
            self._restore_early_stop(state["early_stop"])

    def _restore_early_stop(self, saved: dict) -> None:
        early_stop = self.early_stop
        early_stop.best, early_stop.best_epoch = saved["best"], saved["best_epoch"]
        early_stop.wait, early_stop.stopped_epoch = saved["wait"], saved["stopped_epoch"]
        if saved["best_weights"]:
            with np.load(os.path.join(self.backup_dir, saved["best_weights"])) as arrays:
                early_stop.best_weights = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]

    def on_epoch_end(self, epoch, logs=None):
        due = (epoch + 1) % self.every == 0 and time.time() - self._saved_at >= self.seconds
        if due or epoch + 1 == self.params["epochs"] or self.model.stop_training:
            self._save(epoch + 1)
            self._saved_at = time.time()

    def _save(self, epochs_done: int) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        weights = f"epoch-{epochs_done}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, weights), overwrite=True)
        state = {"epoch": epochs_done, "weights": weights, "finished": bool(self.model.stop_training)}
        state["seconds"] = self.restored_seconds + time.time() - self._started
        state["early_stop"] = self._save_early_stop()
        temporary = self.state_file + ".tmp"
        with open(temporary, "w") as file:
            json.dump(state, file)
        os.replace(temporary, self.state_file)
        self._remove_unreferenced(state)

    def _save_early_stop(self) -> dict | None:
        early_stop = self.early_stop
        if early_stop is None or early_stop.best is None:
            return None
        best_weights = None
        if early_stop.best_weights is not None:
            best_weights = f"best-{early_stop.best_epoch + 1}.npz"
            path = os.path.join(self.backup_dir, best_weights)
            if not os.path.exists(path):  # written once per best epoch; stale files go at train begin
                np.savez(path, *early_stop.best_weights)
        return {
            "best": float(early_stop.best),
            "best_epoch": int(early_stop.best_epoch),
            "wait": int(early_stop.wait),
            "stopped_epoch": int(early_stop.stopped_epoch),
            "best_weights": best_weights,
        }

    def _remove_unreferenced(self, state: dict | None) -> None:
        """Delete files the state does not name (older epochs, or ones written by an interrupted save)."""
        if not os.path.isdir(self.backup_dir):
            return
        kept = {"state.json"}
        if state:
            kept.add(state["weights"])
            kept.add((state["early_stop"] or {}).get("best_weights"))
        for name in set(os.listdir(self.backup_dir)) - kept:
            os.remove(os.path.join(self.backup_dir, name))

    def on_train_end(self, logs=None):
        keras_internals.set_initial_epoch(self.model, None)


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
