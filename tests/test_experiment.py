import csv
import json

import keras
import numpy as np
import pytest

from keras_l2t.datasets import data
from keras_l2t.running import experiment
from keras_l2t.running.backup import RunBackup
from keras_l2t.running.config import RunConfig
from keras_l2t.running.experiment import run
from keras_l2t.training.callbacks import EarlyStopPoint, read_scalars


def tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def test_early_stop_point_records_the_best_epoch_and_writes_it_to_tensorboard(tmp_path):
    callback = EarlyStopPoint(str(tmp_path), patience=2)
    model = tiny_model()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, accuracy in enumerate([0.2, 0.5, 0.4, 0.45, 0.3]):
        model.layers[0].kernel.assign(np.full((2, 1), epoch, "float32"))
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
        if model.stop_training:
            break
    callback.on_train_end()
    assert callback.result() == {"best_epoch": 2, "best_value": 0.5, "stopped_epoch": 4}
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.full((2, 1), 1.0))  # best epoch restored
    scalars = read_scalars(str(tmp_path / "validation"))
    assert [value for _, value in scalars["early_stop/best_epoch"]] == [1, 2, 2, 2]
    assert scalars["early_stop/best_val_accuracy"][-1][1] == pytest.approx(0.5)


def test_early_stop_point_minimises_losses_and_can_run_to_the_end():
    callback = EarlyStopPoint(None, monitor="val_loss")
    model = tiny_model()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, loss in enumerate([3.0, 1.0, 2.0, 2.5, 2.7, 2.9]):
        callback.on_epoch_end(epoch, {"val_loss": loss})
    assert not model.stop_training and callback.result()["best_epoch"] == 2


def test_run_writes_history_and_tensorboard_and_returns_the_early_stop_point(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype="uint8")
    labels = np.arange(60) % 3
    images[labels == 1, :16] = 255  # learnable classes
    splits = data.load((images, labels), backbone="lenet5", validation=0.2, test_fraction=0.2, batch_size=16)
    config = RunConfig(
        "scratch", dataset="tiny", backbone="lenet5", weights=None, epochs=3, out=str(tmp_path), verbose=0
    )
    result = run(config, splits)
    assert result["run"] == f"scratch-lenet5-tiny-nall-e3-s0-{config.key[:10]}" and result["network"] == "lenet5"
    assert config.key != RunConfig("scratch", dataset="tiny", backbone="lenet5", weights=None, epochs=4).key
    assert result["epochs_run"] == 3 and 1 <= result["best_epoch"] <= 3
    assert result["wall_seconds"] > 0 and result["num_train"] == 39  # 20 per class - 4 test - 3 validation
    correct = result["test_accuracy"] * 12  # a share of the 12 test images
    assert correct == pytest.approx(round(correct), abs=1e-6)
    with open(tmp_path / "history" / f"{result['run']}.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
    best = max(range(3), key=lambda epoch: float(rows[epoch]["val_accuracy"]))
    assert result["best_epoch"] == best + 1
    assert result["validation_accuracy"] == pytest.approx(float(rows[best]["val_accuracy"]))
    scalars = read_scalars(str(tmp_path / "tb" / result["run"] / "validation"))
    assert scalars["early_stop/best_epoch"][-1][1] == best + 1 and "epoch_accuracy" in scalars


def test_two_phase_run_reports_both_phases(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="vgg9", validation=0.2, test_fraction=0.2)
    config = RunConfig(
        "feature_extraction", backbone="vgg9", weights=None, epochs=1, fine_tune_epochs=1, out=str(tmp_path), verbose=0
    )
    result = run(config, splits)
    assert result["epochs_run"] == 2 and "test_accuracy_before_fine_tune" in result
    assert (tmp_path / "history" / f"{result['run']}-fine_tune.csv").exists()


def test_the_same_config_gives_the_same_result(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    arrays = (images, np.arange(40) % 2)
    config = RunConfig("scratch", backbone="lenet5", weights=None, epochs=2, out=str(tmp_path), verbose=0)
    results = []
    for _ in range(2):
        keras.utils.set_random_seed(config.seed)
        splits = data.load(arrays, backbone="lenet5", validation=0.2, test_fraction=0.2, batch_size=8)
        results.append(run(config, splits))
    for key in ("train_accuracy", "validation_accuracy", "test_accuracy", "best_epoch"):
        assert results[0][key] == results[1][key]


def fake_epochs(model, callbacks, accuracies, first_epoch=0):
    """Drive callbacks through epochs: the kernel holds the epoch number, validation accuracy is given."""
    for offset, accuracy in enumerate(accuracies):
        epoch = first_epoch + offset
        model.layers[0].kernel.assign(np.full((2, 1), epoch, "float32"))
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
        if model.stop_training:
            break


def backed_up(model, backup_dir, epochs=5, patience=2):
    early_stop = EarlyStopPoint(None, patience=patience)
    backup = RunBackup(str(backup_dir), early_stop)
    for callback in (early_stop, backup):
        callback.set_model(model)
        callback.set_params({"epochs": epochs})
        callback.on_train_begin()
    return early_stop, backup


def test_run_backup_restores_weights_epoch_and_early_stop_point(tmp_path):
    model = tiny_model()
    early_stop, backup = backed_up(model, tmp_path)
    fake_epochs(model, [early_stop, backup], [0.2, 0.5, 0.4])  # interrupted after epoch 3
    assert backup.saved_epoch() == 3 and sorted(p.name for p in tmp_path.iterdir()) == [
        "best-2.npz",
        "epoch-3.weights.h5",
        "state.json",
    ]
    resumed = tiny_model()
    early_stop, backup = backed_up(resumed, tmp_path)
    assert resumed._initial_epoch == 3  # keras.Model.fit starts at epoch index 3
    np.testing.assert_array_equal(resumed.layers[0].kernel.numpy(), np.full((2, 1), 2.0))  # the epoch-3 weights
    assert (early_stop.best, early_stop.best_epoch, early_stop.wait) == (0.5, 1, 1)
    fake_epochs(resumed, [early_stop, backup], [0.45, 0.3], first_epoch=3)
    early_stop.on_train_end()
    assert early_stop.result() == {"best_epoch": 2, "best_value": 0.5, "stopped_epoch": 4}
    np.testing.assert_array_equal(resumed.layers[0].kernel.numpy(), np.full((2, 1), 1.0))  # best epoch restored
    again = tiny_model()
    backed_up(again, tmp_path)
    assert again._initial_epoch == 5  # early stopping had ended it: nothing left to train


def test_an_interrupted_run_resumes_and_reports_every_epoch(tmp_path, monkeypatch):
    images = np.random.default_rng(3).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="lenet5", validation=0.2, test_fraction=0.2)
    config = RunConfig("scratch", backbone="lenet5", weights=None, epochs=4, out=str(tmp_path), verbose=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt  # after epoch 3 is logged, before it is backed up

    callbacks = experiment._callbacks

    def interrupted(*args, **kwargs):
        chosen, early_stop, backup = callbacks(*args, **kwargs)
        return chosen[:-1] + [Interrupt(), backup], early_stop, backup  # the backup stays last

    monkeypatch.setattr(experiment, "_callbacks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config, splits)
    history = tmp_path / "history" / f"{config.name}.csv"
    assert len(history.read_text().splitlines()) == 1 + 3 and (tmp_path / "backup" / config.name).is_dir()
    monkeypatch.setattr(experiment, "_callbacks", callbacks)
    state = json.loads((tmp_path / "backup" / config.name / "train" / "state.json").read_text())
    assert state["epoch"] == 2 and state["seconds"] > 0
    result = run(config, splits)
    with open(history) as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"] and result["epochs_run"] == 4
    best = max(range(4), key=lambda epoch: float(rows[epoch]["val_accuracy"]))
    assert result["best_epoch"] == best + 1 and not (tmp_path / "backup" / config.name).exists()
    assert result["wall_seconds"] >= state["seconds"]  # the whole cost, the interrupted attempt included


def test_the_run_folder_layout_has_one_owner(tmp_path):
    from keras_l2t.core.paths import FINE_TUNE, GridPaths
    from keras_l2t.training import strategies
    from keras_l2t.training.callbacks import MetaWeightsLogger

    images = np.random.default_rng(4).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    sorted_labels = np.arange(40) // 20  # a class-sorted validation split: class 0's images first
    splits = data.load((images, sorted_labels), backbone="vgg9", validation=0.2, test_fraction=0.2)
    config = RunConfig("l2t_ww", dataset="tiny", source_weights=None, epochs=1, out=str(tmp_path), verbose=0)
    model = strategies.build("l2t_ww", num_classes=2, source_weights=None, target="vgg9")
    callbacks, _, backup = experiment._callbacks(config, model, splits)
    paths = GridPaths(str(tmp_path)).run(config.name)
    logger = next(callback for callback in callbacks if isinstance(callback, MetaWeightsLogger))
    assert logger.log_dir == str(tmp_path / "tb" / config.name / "meta")  # not meta/meta
    label_of = {
        np.asarray(image).tobytes(): int(np.argmax(label) if np.ndim(label) else label)
        for images_, labels in splits.validation
        for image, label in zip(np.asarray(images_), np.asarray(labels), strict=True)
    }
    assert {label_of[np.asarray(image).tobytes()] for image in logger.inputs[:2]} == {0, 1}  # both classes shown
    assert backup.backup_dir == paths.backup() == str(tmp_path / "backup" / config.name / "train")
    assert paths.history(FINE_TUNE) == str(tmp_path / "history" / f"{config.name}-fine_tune.csv")
