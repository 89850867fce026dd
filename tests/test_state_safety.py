"""Nothing read silently wrong (issue 39): backups, results rows and model files are verified before use."""

import json
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import load_app
from PIL import Image
from test_trust import fake_result

from keras_l2t.core.paths import FINE_TUNE
from keras_l2t.datasets import data
from keras_l2t.running import executors, experiment, grid, inference, results
from keras_l2t.running.backup import RunBackup
from keras_l2t.running.config import RunConfig
from keras_l2t.training.callbacks import EarlyStopPoint, read_scalars

APPS = Path(__file__).resolve().parents[1] / "apps"


def small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(512), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(backup_dir, epochs: int) -> int:
    """Fit a fresh small model with an early-stop point and a backup; the number of epochs it trained (not restored)."""
    inputs = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    labels = np.arange(8) % 2
    early_stop = EarlyStopPoint(None, monitor="val_loss")
    callbacks = [early_stop, RunBackup(str(backup_dir), early_stop)]
    history = small_model().fit(
        inputs, labels, epochs=epochs, verbose=0, validation_data=(inputs, labels), callbacks=callbacks
    )
    return len(history.history["loss"])


def overwrite_4_kb(path):
    """4 KB of the largest array's values replaced by others; the file's size and structure unchanged."""
    import h5py

    with h5py.File(path) as file:
        arrays = []
        file.visititems(lambda name, item: arrays.append(item) if isinstance(item, h5py.Dataset) else None)
        largest = max(arrays, key=lambda array: array.nbytes)
        assert largest.nbytes >= 8192
        offset = largest.id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset : offset + 4096] = bytes(255 - value for value in data[offset : offset + 4096])
    path.write_bytes(bytes(data))


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# 3. a damaged backup is discarded with a message, never resumed from


@pytest.mark.parametrize(
    ("name", "damage"),
    [("epoch-2.weights.h5", overwrite_4_kb), ("epoch-2.weights.h5", cut_in_half), ("best-2.npz", cut_in_half)],
)
def test_a_damaged_backup_is_discarded_and_the_run_restarts(tmp_path, capsys, name, damage):
    backup_dir = tmp_path / "backup"
    assert fit(backup_dir, 2) == 2
    damage(backup_dir / name)
    assert fit(backup_dir, 3) == 3  # from its first epoch
    assert "does not match its SHA-256 checksum" in capsys.readouterr().out
    assert fit(backup_dir, 4) == 1  # the new backup is sound: resumed after epoch 3


def test_a_backup_from_before_checksums_is_still_resumed(tmp_path):
    import json

    backup_dir = tmp_path / "backup"
    fit(backup_dir, 2)
    state = json.loads((backup_dir / "state.json").read_text())
    del state["sha256"]
    (backup_dir / "state.json").write_text(json.dumps(state))
    assert fit(backup_dir, 3) == 1 and os.path.exists(backup_dir / "state.json")


# 4. results.csv: one row per run, a spreadsheet's save read as it was, a row's key must be its config's


def test_a_row_present_twice_counts_once(tmp_path):
    out = str(tmp_path)
    results.append_result(out, fake_result(0))
    results.append_result(out, fake_result(1))
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + [lines[1]]))
    with pytest.warns(UserWarning, match="line 4: a second row of the run of line 2; the row is left out.$"):
        table = results.read_results(out)
    assert sorted(table["seed"]) == [0, 1]
    results.append_result(out, fake_result(2))  # the extra row is set aside, verbatim
    assert (tmp_path / "results.csv.rejected").read_text() == lines[1]


def test_a_results_file_saved_by_a_spreadsheet_reads_as_before(tmp_path):
    out = str(tmp_path)
    results.append_result(out, fake_result(0))
    results.append_result(out, fake_result(1))
    path = tmp_path / "results.csv"
    original = results.read_results(out)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # UTF-8 BOM, CRLF line ends
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = results.read_results(out)
    pd.testing.assert_frame_equal(table, original)


def test_a_row_whose_config_is_not_its_key_is_rejected(tmp_path):
    out = str(tmp_path)
    edited = {**fake_result(1), "key": fake_result(0)["key"]}  # the seed of the config changed, not the key
    results.append_result(out, edited)
    with pytest.warns(UserWarning, match="line 2: its key .* is not its config's"):
        assert results.read_results(out).empty


# 8. a finished run's backup left by a kill between its row and its removal goes at the next start


def test_the_backup_of_a_recorded_run_is_removed(tmp_path, monkeypatch):
    out = str(tmp_path)
    results.append_result(out, fake_result(0))
    config = RunConfig("scratch", dataset="d", seed=0, out=out)
    os.makedirs(config.paths.backup(FINE_TUNE))
    unfinished = RunConfig("scratch", dataset="d", seed=1, out=out)
    os.makedirs(unfinished.paths.backup())
    monkeypatch.setattr(executors, "run", lambda config, **options: fake_result(config.seed))
    grid.run_grid([config], out, echo=lambda line: None)
    assert not os.path.exists(config.paths.backup_root)
    assert os.path.isdir(unfinished.paths.backup())  # a run not yet recorded keeps its backup


# 5-7. model files: metadata checked against the model, configs naming only Keras, TFLite files verified


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 3-class model saved with its metadata, its TFLite export, and an image."""
    root = tmp_path_factory.mktemp("model")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    inference.save_model(model, str(root / "good.keras"), class_names=["a", "b", "c"], image_size=32, network="lenet5")
    inference.export_file(str(root / "good.keras"), str(root / "good.tflite"))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype="uint8")
    Image.fromarray(pixels).save(root / "image.png")
    return root


def rewritten(saved, name: str, entry: str, change) -> str:
    """A copy of the saved model with one entry of its zip (the metadata or the config) changed."""
    target = saved / name
    with zipfile.ZipFile(saved / "good.keras") as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.namelist():
            content = source.read(item)
            copy.writestr(item, json.dumps(change(json.loads(content))) if item == entry else content)
    return str(target)


def predict_app(saved, capsys, model: str, *more) -> tuple[int, str]:
    code = load_app("predict").main(["--model", model, str(saved / "image.png"), "--out", str(saved / "out"), *more])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"class_names": ["a", "b"]}, "names 2 classes .* the model has 3 outputs"),  # was an IndexError
        ({"class_names": list("abcde")}, "names 5 classes .* the model has 3 outputs"),  # was labelled a, b, c
        ({"image_size": 100000}, "image size 100000; .* 1 to 1024 pixels"),  # was a MemoryError
        ({"image_size": 64}, "image size 64 but the model takes 32x32 inputs"),
    ],
)
def test_metadata_that_does_not_fit_its_model_is_refused(saved, capsys, change, expected):
    model = rewritten(saved, "changed.keras", inference.METADATA, lambda metadata: {**metadata, **change})
    code, error = predict_app(saved, capsys, model)
    assert code == 2 and re.fullmatch(f"error: .*{expected}.*\n", error)


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("builtins", "eval")])
def test_a_keras_config_naming_a_function_is_refused_with_a_message(saved, capsys, module, name):
    def naming(config):
        config["config"]["layers"][1] = {"module": module, "class_name": name, "config": {"name": "x"}}
        return config

    code, error = predict_app(saved, capsys, rewritten(saved, f"{name}.keras", "config.json", naming))
    assert code == 2 and error == f"error: {saved}/{name}.keras names {module}.{name} in its config, " + (
        "which is not a Keras object: refused, nothing was loaded or run. Use a model saved by keras_l2t.\n"
    )


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_export_into_a_missing_folder_says_so(saved, capsys):
    code, error = predict_app(saved, capsys, str(saved / "good.keras"), "--export", str(saved / "no" / "m.tflite"))
    assert code == 2 and f"the folder {saved / 'no'} does not exist" in error  # was "error: 2"
    (saved / "a_file").write_text("")
    code = load_app("predict").main(
        ["--model", str(saved / "good.keras"), str(saved / "image.png"), "--out", str(saved / "a_file")]
    )
    assert code == 2 and error_line(capsys) == f"error: File exists: {saved / 'a_file'}"  # was a traceback


def test_an_image_size_that_cannot_fit_in_memory_is_refused_first(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"image_size \(--image-size\) must be at most 1024, got 10000"):
        RunConfig("scratch", image_size=10000)
    arguments = ["--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--image-size", "10000"]
    assert load_app().main(arguments) == 2
    assert "must be at most 1024" in capsys.readouterr().err and not (tmp_path / "out" / "results.csv").exists()


TFLITE_CHECK = """
import contextlib, io, random, sys
sys.path.insert(0, sys.argv[4])
import predict
from keras_l2t.running import model_files
good, folder, count = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
for name in ("random", "half"):  # through the app: a one-line error, exit 2
    with contextlib.redirect_stderr(io.StringIO()) as error:
        code = predict.main(["--model", f"{folder}/{name}.tflite", f"{folder}/image.png", "--out", folder])
    print(name, code, error.getvalue().strip().splitlines()[-1])
rng = random.Random(0)
loaded = refused = 0
for index in range(count):  # mutants: cut short, a few bytes changed, a run of random bytes
    data = bytearray(good)
    start = rng.randrange(8, len(data))
    if index % 3 == 0:
        data = data[:start]
    elif index % 3 == 1:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
    else:
        data[start : start + 64] = bytes(rng.randrange(256) for _ in data[start : start + 64])
    path = f"{folder}/mutant.tflite"
    open(path, "wb").write(bytes(data))
    try:
        model_files.load_tflite(path)
        loaded += 1
    except ValueError as error:
        assert "mutant.tflite" in str(error), error
        refused += 1
print("mutants", loaded, refused)
"""


def test_damaged_tflite_files_are_refused_without_a_crash(saved, tmp_path):
    """In a subprocess: a file the interpreter would crash on ends the child with a signal, failing the test."""
    good = (saved / "good.tflite").read_bytes()
    (tmp_path / "random.tflite").write_bytes(np.random.default_rng(1).bytes(len(good)))  # was "error: utf-8"
    (tmp_path / "half.tflite").write_bytes(good[: len(good) // 2])  # was signal 11
    for name in ("random", "half"):
        (tmp_path / f"{name}.json").write_text((saved / "good.json").read_text())
    (tmp_path / "image.png").write_bytes((saved / "image.png").read_bytes())
    arguments = [str(saved / "good.tflite"), str(tmp_path), "300", str(APPS)]
    done = subprocess.run([sys.executable, "-c", TFLITE_CHECK, *arguments], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-1000:])  # -11: the interpreter crashed
    lines = done.stdout.splitlines()[-3:]
    not_tflite = "is not a TFLite model (no 'TFL3' identifier at its start); export it again."
    assert lines[0] == f"random 2 error: {tmp_path}/random.tflite {not_tflite}"
    assert lines[1].startswith(f"half 2 error: {tmp_path}/half.tflite is a damaged TFLite model (")
    loaded, refused = map(int, lines[2].split()[1:])
    assert loaded + refused == 300 and refused > 100, (loaded, refused)
    print(f"TFLite mutants: {loaded} loaded, {refused} refused")


def test_a_discarded_backup_takes_its_attempts_curves_with_it(tmp_path, monkeypatch):
    images = np.random.default_rng(3).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="lenet5", validation=0.2, test_fraction=0.2)
    config = RunConfig("scratch", backbone="lenet5", weights=None, epochs=3, out=str(tmp_path), verbose=0)
    callbacks = experiment._callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # after epoch 2 is backed up

    def interrupted(*args):
        chosen, early_stop, backup = callbacks(*args)
        return chosen + [Interrupt()], early_stop, backup

    monkeypatch.setattr(experiment, "_callbacks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(config, splits)
    monkeypatch.setattr(experiment, "_callbacks", callbacks)
    cut_in_half(Path(config.paths.backup()) / "epoch-2.weights.h5")
    experiment.run(config, splits)
    steps = [step for step, _ in read_scalars(os.path.join(config.paths.tensorboard(), "train"))["epoch_loss"]]
    assert steps == [0, 1, 2]  # the first attempt's epochs 1-2 are not drawn a second time
