"""Nothing read silently wrong (issue 39): backups, results rows and model files are verified before use."""

import os
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
from test_trust import fake_result

from keras_l2t import executors, grid, results
from keras_l2t.backup import RunBackup
from keras_l2t.config import RunConfig
from keras_l2t.paths import FINE_TUNE


def small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(512), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(backup_dir, epochs: int) -> int:
    """Fit a fresh small model with a backup; the number of epochs it trained (not restored)."""
    inputs = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    labels = np.arange(8) % 2
    history = small_model().fit(inputs, labels, epochs=epochs, verbose=0, callbacks=[RunBackup(str(backup_dir))])
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


@pytest.mark.parametrize("damage", [overwrite_4_kb, cut_in_half])
def test_a_damaged_backup_is_discarded_and_the_run_restarts(tmp_path, capsys, damage):
    backup_dir = tmp_path / "backup"
    assert fit(backup_dir, 2) == 2
    (weights,) = backup_dir.glob("epoch-2.weights.h5")
    damage(weights)
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
