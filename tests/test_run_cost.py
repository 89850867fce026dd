"""Issue 16: a run's fixed cost (validation every k epochs, time-spaced backups) and cached frozen features."""

import csv
import dataclasses
import hashlib
import json
import math

import keras
import numpy as np
import pytest

from keras_l2t.datasets import data
from keras_l2t.running import experiment
from keras_l2t.running.backup import RunBackup
from keras_l2t.running.config import RunConfig
from keras_l2t.running.experiment import run
from keras_l2t.training import features, strategies
from keras_l2t.training.callbacks import read_scalars


def learnable_splits(batch_size=16, augment="auto"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype="uint8")
    labels = np.arange(60) % 3
    images[labels == 1, :16] = 255
    return data.load(
        (images, labels), backbone="lenet5", validation=0.2, test_fraction=0.2, batch_size=batch_size, augment=augment
    )


def history(tmp_path, result, phase=""):
    with open(tmp_path / "history" / f"{result['run']}{phase}.csv") as file:
        return list(csv.DictReader(file))


def test_validation_every_k_epochs_and_the_early_stop_point_among_the_validated_ones(tmp_path):
    config = RunConfig(
        "scratch", dataset="tiny", backbone="lenet5", weights=None, epochs=7, validate_every=3, out=str(tmp_path),
        verbose=0,
    )  # fmt: skip
    result = run(config, learnable_splits())
    rows = history(tmp_path, result)
    validated = [int(row["epoch"]) + 1 for row in rows if row["val_accuracy"] != "NA"]
    assert validated == [1, 3, 6, 7]  # the first, every third and the last
    assert result["best_epoch"] in validated
    best = max(validated, key=lambda epoch: float(rows[epoch - 1]["val_accuracy"]))
    assert result["best_epoch"] == best
    assert result["validation_accuracy"] == pytest.approx(float(rows[best - 1]["val_accuracy"]))
    steps = [
        step + 1 for step, _ in read_scalars(str(tmp_path / "tb" / result["run"] / "validation"))["epoch_accuracy"]
    ]
    assert steps == validated  # TensorBoard's validation curve has the validated epochs only


def test_patience_counts_epochs_in_whole_validations(tmp_path):
    config = RunConfig(
        "scratch",
        dataset="tiny",
        backbone="lenet5",
        weights=None,
        epochs=40,
        validate_every=2,
        patience=3,
        learning_rate=1e-9,
        out=str(tmp_path),
        verbose=0,
    )  # fmt: skip: a rate that learns nothing, so validation accuracy never improves after the first epoch
    result = run(config, learnable_splits())
    # patience 3 epochs = 2 validations: validated epochs 1 (the best), 2 and 4 (no improvement): stop after 4
    assert result["epochs_run"] == 4 and result["best_epoch"] == 1


def test_backups_wait_the_given_seconds(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every call of time.time advances 10 s
    monkeypatch.setattr("keras_l2t.running.backup.time.time", lambda: next(clock))
    saved = []
    monkeypatch.setattr(RunBackup, "_save", lambda self, epochs: saved.append(epochs))
    backup = RunBackup(str(tmp_path / "backup"), every=1, seconds=25)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False
    backup.set_model(model)
    backup.set_params({"epochs": 8})
    backup.on_train_begin()
    for epoch in range(8):
        backup.on_epoch_end(epoch)
    assert saved and saved[-1] == 8 and len(saved) < 8  # spaced in time, and always the last epoch
    assert RunBackup(str(tmp_path), every=1).seconds == 0  # without seconds, every epoch (as before)


def test_new_fields_at_their_defaults_keep_the_keys_of_earlier_runs():
    config = RunConfig("scratch", epochs=15)
    earlier = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k
        not in ("out", "verbose", "backup_every", "backup_seconds", "keep_model", "validate_every", "feature_views")
        + ("devices", "mixed_precision")  # issue 15
        + ("meta_steps", "meta_warmup", "meta_reach")  # issue 37
        + ("weight_decay", "warmup_epochs", "matching_weight", "dropout", "grayscale", "equalize")  # issues 33, 35
        + ("head_init",)  # issue 35
    }
    assert config.key == hashlib.sha1(json.dumps(earlier, sort_keys=True).encode()).hexdigest()
    assert dataclasses.replace(config, validate_every=5).key != config.key
    assert dataclasses.replace(config, backup_seconds=60).key == config.key  # how a run is kept, not what it is
    assert dataclasses.replace(config, devices=2).key == config.key  # where it trains, not what it is
    assert dataclasses.replace(config, mixed_precision="bfloat16").key != config.key


@pytest.mark.parametrize("strategy", strategies.names("classic"))
def test_only_a_frozen_backbone_trains_on_cached_features(strategy):
    splits = learnable_splits()
    config = RunConfig(strategy, dataset="tiny", backbone="lenet5", weights=None, epochs=1)
    model = experiment.build_model(config, splits)
    assert (features.frozen_backbone(model) is not None) == (strategies.spec(strategy).trainable == "none")


def test_feature_extraction_computes_features_once_per_view_and_trains_the_full_models_head(tmp_path, monkeypatch):
    passes = []
    compute = features._features
    monkeypatch.setattr(features, "_features", lambda *args: passes.append(1) or compute(*args))
    splits = learnable_splits()
    config = RunConfig(
        "feature_extraction", dataset="tiny", backbone="lenet5", weights=None, feature_views=3, out=str(tmp_path),
        verbose=0,
    )  # fmt: skip
    assert config.epochs == strategies.spec("feature_extraction").epochs == 100  # the head trains to convergence
    model = experiment.build_model(config, splits)
    backbone = features.frozen_backbone(model)
    backbone_before = [weight.copy() for weight in backbone.get_weights()]
    head_before = model.get_layer("head_classifier").get_weights()[0].copy()
    head = features.head_training(model, splits, views=3, seed=0, batch_size=16)
    assert len(passes) == 4  # three augmented views of train, one pass over validation
    head.model.fit(head.splits.train.repeat(), steps_per_epoch=3, epochs=5, verbose=0)
    assert not np.allclose(model.get_layer("head_classifier").get_weights()[0], head_before)  # shared layers
    for before, after in zip(backbone_before, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    images, _ = next(iter(splits.validation))
    extractor = keras.Model(model.input, model.get_layer("head_dropout").input)
    cached, _ = next(iter(head.splits.validation))
    np.testing.assert_allclose(cached[: len(images)], extractor.predict_on_batch(images), rtol=1e-5, atol=1e-6)
    passes.clear()
    result = run(config, splits)
    assert len(passes) == 4 and result["epochs_run"] == 100  # 100 epochs, no further backbone pass over train


def test_cached_views_differ_when_augmented_and_collapse_to_one_when_not(tmp_path):
    for augment, views in (("crop", 3), ("none", 1)):
        splits = learnable_splits(augment=augment)
        config = RunConfig("feature_extraction", dataset="tiny", backbone="lenet5", weights=None, epochs=1)
        head = features.head_training(experiment.build_model(config, splits), splits, views=3, seed=0, batch_size=16)
        epochs = [np.concatenate([x for x, _ in head.splits.train]) for _ in range(12)]
        distinct = {np.sort(epoch.sum(axis=1)).round(4).tobytes() for epoch in epochs}  # the view, whatever the order
        assert len(distinct) == views
        assert len({epoch.sum(axis=1).round(4).tobytes() for epoch in epochs}) > views  # a new order each epoch
        batches = math.ceil(splits.counts["train"] / 16)
        assert batches == int(head.splits.train.cardinality()) == len(list(head.splits.train))


def test_a_run_still_climbing_at_the_end_of_its_budget_is_flagged(tmp_path):
    from keras_l2t.analysis.report import still_climbing

    def history_file(name, accuracies):
        path = tmp_path / f"{name}.csv"
        path.write_text("epoch,val_accuracy\n" + "".join(f"{e},{a}\n" for e, a in enumerate(accuracies)))
        return str(path)

    assert still_climbing(history_file("rising", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
    assert not still_climbing(history_file("flat", [0.1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.605, 0.6]))
    assert not still_climbing(history_file("gaps", [0.1, "NA", 0.6, "NA", 0.6, "NA", "NA", 0.6]))
    assert still_climbing(str(tmp_path / "missing.csv")) is None
