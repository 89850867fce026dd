"""A run's backup at epoch ends, resumed after an interruption, every file checked against its checksum first.

    <backup_dir>/state.json             the epoch, the files below with their SHA-256, the early-stop state
    <backup_dir>/epoch-<k>.weights.h5   the model's weights and every optimizer's state after epoch k
    <backup_dir>/best-<k>.npz           the early-stop point's best weights (epoch k)

A backup whose files do not match their checksums (overwritten, cut short, replaced) is reported and discarded,
and the run starts again from its first epoch: damaged state is never trained on. Backups written before the
checksums were added are checked by their format alone, as they were then.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from typing import TYPE_CHECKING

import h5py
import keras
import numpy as np

from keras_l2t.core import keras_internals

if TYPE_CHECKING:
    from keras_l2t.training.callbacks import EarlyStopPoint

__all__ = ["RunBackup", "file_checksum"]


def file_checksum(path: str) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks.

    Args:
        path: the file.

    Returns:
        Its hexadecimal digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_files(backup_dir: str, state: dict) -> None:
    """Raise ValueError naming the first file of the state that is missing, damaged or changed since its save."""
    names = [state["weights"], (state.get("early_stop") or {}).get("best_weights")]
    checksums = state.get("sha256")
    for name in filter(None, names):
        path = os.path.join(backup_dir, name)
        if checksums is None:  # a backup written before checksums: its format is all that can be checked
            readable = h5py.is_hdf5(path) if name.endswith(".h5") else zipfile.is_zipfile(path)
            if not readable:
                raise ValueError(f"{name} is missing or damaged")
        elif not os.path.isfile(path):
            raise ValueError(f"{name} is missing")
        elif file_checksum(path) != checksums.get(name):
            raise ValueError(f"{name} does not match its SHA-256 checksum (damaged or changed since it was saved)")


class RunBackup(keras.callbacks.Callback):
    """Back a run up at epoch ends and resume it after an interruption, early-stop point included.

    Like `keras.callbacks.BackupAndRestore` (the model's weights and every optimizer's state, L2TModel's meta
    optimizer too, and the epoch), plus the state of an `EarlyStopPoint` (best value, best epoch, patience
    count, best weights) and whether early stopping already ended the run. A save writes epoch-numbered files,
    then `state.json` (with each file's SHA-256) by an atomic rename, then removes older files: an interruption
    at any moment leaves a consistent backup. A resumed run goes on from the saved epoch; its data order restarts
    from the seed, so it equals an uninterrupted run statistically, not bit for bit; `restored_seconds` is the
    training time the backup stands for, so that a resumed run can report its whole cost. Put it after the
    `EarlyStopPoint` in `fit`'s callbacks, so that both have finished an epoch before it is saved.

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
            _check_files(self.backup_dir, state)
            return state
        except (OSError, ValueError, TypeError, AttributeError) as error:  # a JSON error is a ValueError
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
        files = filter(None, (weights, (state["early_stop"] or {}).get("best_weights")))
        state["sha256"] = {name: file_checksum(os.path.join(self.backup_dir, name)) for name in files}
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
