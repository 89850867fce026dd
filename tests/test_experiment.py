import csv

import keras
import numpy as np
import pytest

from keras_l2t import data
from keras_l2t.callbacks import EarlyStopPoint, read_scalars
from keras_l2t.experiment import RunConfig, run


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
    assert result["run"] == f"scratch-lenet5-tiny-nall-e3-s0-{config.key}" and result["network"] == "lenet5"
    assert config.key != RunConfig("scratch", dataset="tiny", backbone="lenet5", weights=None, epochs=4).key
    assert result["epochs_run"] == 3 and 1 <= result["best_epoch"] <= 3
    assert (
        0 <= result["test_accuracy"] <= 1 and result["wall_seconds"] > 0 and result["num_train"] == 39
    )  # 20 per class - 4 test - 3 validation
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
