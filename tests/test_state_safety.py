"""Nothing read silently wrong (issue 39): backups, results rows and model files are verified before use."""

import os

import keras
import numpy as np
import pytest

from keras_l2t.backup import RunBackup


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
