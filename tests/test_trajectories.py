import csv

import keras
import numpy as np
import pytest

from keras_l2t.core.paths import GridPaths
from keras_l2t.datasets import data
from keras_l2t.running import trajectories
from keras_l2t.running.config import RunConfig
from keras_l2t.running.experiment import run


def read_rows(path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


def tiny_network():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2, name="out")]
    )
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_weight_trajectory_records_the_initialisation_then_every_epoch_and_a_resumed_run_appends(tmp_path):
    inputs = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    labels = (inputs[:, 0] > 0).astype("int64")
    model, path = tiny_network(), tmp_path / "trajectory.csv"
    start = model.get_layer("hidden").kernel.numpy().ravel()
    model.fit(inputs, labels, epochs=2, verbose=0, callbacks=[trajectories.WeightTrajectory(str(path), per_layer=3)])
    rows = read_rows(path)
    assert list(rows[0]) == ["epoch", "hidden[0]", "hidden[5]", "hidden[11]", "out[0]", "out[2]", "out[5]"]
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert [float(rows[0][f"hidden[{index}]"]) for index in (0, 5, 11)] == pytest.approx(start[[0, 5, 11]])
    after = model.get_layer("out").kernel.numpy().ravel()
    assert [float(rows[-1][f"out[{index}]"]) for index in (0, 2, 5)] == pytest.approx(after[[0, 2, 5]])
    assert rows[1]["out[0]"] != rows[0]["out[0]"]  # the weights moved
    callback = trajectories.WeightTrajectory(str(path), per_layer=3)
    model.fit(inputs, labels, initial_epoch=2, epochs=3, verbose=0, callbacks=[callback])
    assert [row["epoch"] for row in read_rows(path)] == ["0", "1", "2", "3"]  # appended, no second initialisation


def test_weight_trajectory_figure_compares_runs_from_the_same_start_and_refuses_others(tmp_path):
    header = "epoch,a[0],a[3],b[1]\n"
    files = {}
    for label, slope in (("scratch", 0.1), ("l2t_www", 0.3)):
        rows = [f"{epoch},{0.5 + slope * epoch},{-0.2 * epoch},{slope}\n" for epoch in range(5)]
        (tmp_path / f"{label}.csv").write_text(header + "".join(rows))
        files[label] = str(tmp_path / f"{label}.csv")
    drawn = trajectories.plot_weight_trajectories(files, str(tmp_path / "figure.png"), weights=2)
    assert drawn == ["a[0]", "b[1]"] and (tmp_path / "figure.png").stat().st_size > 10_000
    (tmp_path / "other.csv").write_text(header + "0,0.7,0,0\n1,0.8,0,0\n")
    with pytest.raises(ValueError, match="same weights"):
        trajectories.plot_weight_trajectories({**files, "other": str(tmp_path / "other.csv")}, str(tmp_path / "x.png"))


def test_snapshot_epochs_are_the_first_a_quarter_half_way_and_the_last():
    assert trajectories.snapshot_epochs(200) == [1, 50, 100, 200]
    assert trajectories.snapshot_epochs(2) == [1, 2]


def test_a_run_records_its_weight_trajectory_and_a_fresh_start_replaces_an_old_one(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="lenet5", validation=0.2, test_fraction=0.2)
    config = RunConfig("scratch", backbone="lenet5", weights=None, epochs=2, out=str(tmp_path), verbose=0)
    path = GridPaths(str(tmp_path)).run(config.name).trajectory()
    (tmp_path / "trajectories").mkdir()
    (tmp_path / "trajectories" / f"{config.name}.csv").write_text("epoch,old[0]\n0,1\n1,2\n2,3\n3,4\n")  # no backup
    run(config, splits)
    rows = read_rows(path)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"] and "old[0]" not in rows[0] and "conv1[0]" in rows[0]


def test_gamma_snapshots_keep_each_pairs_which_maps_at_the_chosen_epochs(tmp_path):
    from keras_l2t.training import strategies

    keras.utils.set_random_seed(0)
    model = strategies.build("l2t_www", num_classes=2, target="vgg9", source_weights=None, input_shape=(32, 32, 3))
    inputs = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    callback, path = (
        trajectories.GammaSnapshots(inputs, str(tmp_path / "gamma.npz"), epochs=[1, 3]),
        tmp_path / "gamma.npz",
    )
    callback.set_model(model)
    for epoch in range(3):
        callback.on_epoch_end(epoch)
    saved = np.load(path)
    pairs = len(model.pairs)
    assert sorted(saved.files) == sorted(
        ["images", "pairs"] + [f"epoch{e}_pair{k}" for e in (1, 3) for k in range(pairs)]
    )
    which = [weights[2] for weights in model.meta_weights(model.source_maps(inputs))]
    for pair in range(pairs):
        assert saved[f"epoch3_pair{pair}"] == pytest.approx(np.mean(np.asarray(which[pair]), axis=-1), abs=1e-6)
    np.testing.assert_array_equal(saved["images"], inputs)
    drawn = trajectories.plot_gamma(str(path), str(tmp_path / "gamma.png"))
    spread = [np.mean(np.std(saved[f"epoch3_pair{k}"], axis=(1, 2))) for k in range(pairs)]
    assert drawn == int(np.argmax(spread)) and (tmp_path / "gamma.png").stat().st_size > 10_000


@pytest.mark.slow
def test_an_l2t_www_run_records_its_weight_trajectory_and_gamma_maps(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="vgg9", validation=0.2, test_fraction=0.2, batch_size=16)
    config = RunConfig("l2t_www", dataset="tiny", source_weights=None, epochs=2, out=str(tmp_path), verbose=0)
    result = run(config, splits)
    paths = GridPaths(str(tmp_path)).run(result["run"])
    rows = read_rows(paths.trajectory())
    assert [row["epoch"] for row in rows] == ["0", "1", "2"] and "conv1[0]" in rows[0]
    saved = np.load(paths.gamma)
    pairs = len(saved["pairs"])
    assert pairs > 0 and saved["images"].shape == (4, 32, 32, 3)
    assert sorted(saved.files) == sorted(
        ["images", "pairs"] + [f"epoch{e}_pair{k}" for e in (1, 2) for k in range(pairs)]
    )
    maps = saved[f"epoch2_pair{pairs - 1}"]
    assert maps.ndim == 3 and maps.shape[0] == 4 and np.all(np.isfinite(maps)) and np.all(maps >= 0)
    drawn = trajectories.plot_gamma(paths.gamma, str(tmp_path / "gamma.png"))
    spread = [np.mean(np.std(saved[f"epoch2_pair{k}"], axis=(1, 2))) for k in range(pairs)]
    assert drawn == int(np.argmax(spread)) and (tmp_path / "gamma.png").stat().st_size > 10_000


def test_examples_come_from_distinct_classes_across_batches_then_fill_up():
    sorted_batches = [  # a class-sorted split: the first batch holds class 0 only
        (np.full((3, 2, 2, 3), 0.0), np.array([0, 0, 0])),
        (np.stack([np.full((2, 2, 3), value) for value in (1.0, 1.5, 2.0)]), np.eye(3)[[1, 1, 2]]),
    ]
    examples = trajectories.examples_of_distinct_classes(sorted_batches, 4)
    assert [float(image[0, 0, 0]) for image in examples] == [0.0, 1.0, 2.0, 0.0]
    assert len(trajectories.examples_of_distinct_classes(sorted_batches, 2)) == 2
    first_batch_only = trajectories.examples_of_distinct_classes(sorted_batches, 4, scanned=3)
    assert [float(image[0, 0, 0]) for image in first_batch_only] == [0.0, 0.0, 0.0]
