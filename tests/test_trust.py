"""Results you can trust (issue 17): one test per finding of the hostile-user corpus."""

import dataclasses
import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import load_app, tiny_image_folder
from PIL import Image

from keras_l2t.datasets import data, sources, splits
from keras_l2t.networks.torch_checkpoint import LEGACY_MAGIC_NUMBER, read_torch_checkpoint
from keras_l2t.networks.weight_formats import read_state_dict
from keras_l2t.running import executors, grid, results
from keras_l2t.running.backup import RunBackup
from keras_l2t.running.config import RunConfig

APP_ARGUMENTS = ["--preset", "none", "--strategies", "scratch", "--backbone", "lenet5", "--weights", "none"]
APP_ARGUMENTS += ["--epochs", "1"]


def payload(marker) -> bytes:
    """A pickle that creates `marker` (os.system), then evaluates to the legacy magic number."""
    command = f"touch {marker}".encode()
    call = b"cos\nsystem\n" + b"X" + len(command).to_bytes(4, "little") + command + b"\x85R0"
    return b"\x80\x02" + call + pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)[2:]


# 1. no code runs from a weights file


def test_a_trojaned_legacy_checkpoint_runs_nothing(shared, tmp_path):
    real = (shared / "weights/resnet32_tinyimagenet_l2tww.pth.tar").read_bytes()
    handle = io.BytesIO(real)
    pickle.load(handle)  # the real first pickle: the magic number
    trojan = tmp_path / "trojan.pth.tar"
    trojan.write_bytes(payload(tmp_path / "owned") + real[handle.tell() :])
    with pytest.raises(Exception, match="refusing to load os.system"):
        read_state_dict(trojan)
    assert not (tmp_path / "owned").exists()
    state = read_state_dict(shared / "weights/resnet32_tinyimagenet_l2tww.pth.tar")  # the real one, bit for bit
    with np.load(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz") as expected:
        assert set(state) == set(expected.files)
        for key in expected.files:
            np.testing.assert_array_equal(state[key], expected[key])


def test_a_trojaned_zip_checkpoint_runs_nothing(tmp_path):
    trojan = tmp_path / "trojan.pth"
    with zipfile.ZipFile(trojan, "w") as archive:
        archive.writestr("archive/data.pkl", payload(tmp_path / "owned"))
    read_torch_checkpoint(trojan)  # the call becomes an inert placeholder
    assert not (tmp_path / "owned").exists()


# 2. one writer per output folder


def test_a_second_process_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(f'pid {os.getpid()}'); f.flush(); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", holder, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(results.OutputInUse, match=f"in use by pid {other.pid}"):
            grid.run_grid([RunConfig("scratch")], str(out))
    finally:
        other.kill()
        other.wait()
    with results.lock(str(out)):  # the lock went with its process
        with results.lock(str(out)):  # and is re-entrant within one
            pass


# 3. a diverged run is recorded as diverged and left out of the statistics


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("tiny"), classes=("ant", "bee"), train=10)


TINY = {"backbone": "lenet5", "weights": None, "epochs": 2, "batch_size": 4, "validation": 2, "quiet": True}


def test_a_diverged_run_is_recorded_and_left_out_of_the_statistics(folder, tmp_path):
    lines = []
    table, text = grid.compare(
        None, out=str(tmp_path), dataset=folder, strategy_names=["scratch"], seeds=[0, 1], learning_rate=1e38,
        echo=lines.append, **TINY,
    )  # fmt: skip
    assert (table["diverged_epoch"] == 1).all() and (table["epochs_run"] == 1).all()  # stopped in epoch 1
    assert any("DIVERGED in epoch 1" in line for line in lines)
    assert "## Diverged runs" in text and "0 runs" in text  # no statistics from diverged runs


# 4. every row of results.csv is verified when read


def fake_result(seed: int, **config) -> dict:
    run_config = RunConfig("scratch", dataset="d", seed=seed, **config)
    return {
        **dataclasses.asdict(run_config), "run": run_config.name, "key": run_config.key, "network": "lenet5",
        "epochs_run": 3, "best_epoch": 2, "train_accuracy": 0.5, "validation_accuracy": 0.25,
        "test_accuracy": 0.4661, "wall_seconds": 12.5, "diverged_epoch": None,
    }  # fmt: skip


@pytest.mark.parametrize("cut", ["inside a number", "inside the config", "header only"])
def test_a_truncated_row_is_reported_and_its_run_redone(tmp_path, cut):
    out = str(tmp_path)
    results.append_result(out, fake_result(0))
    results.append_result(out, fake_result(1))
    path = tmp_path / "results.csv"
    text = path.read_text()
    position = {
        "inside a number": text.rindex("0.4661") + 4,
        "inside the config": text.rindex('"seed"'),
        "header only": text.index("\n") + 1,
    }[cut]
    path.write_text(text[:position])
    with pytest.warns(UserWarning, match=r"results\.csv, line (2|3):") if cut != "header only" else nullcontext():
        table = results.read_results(out)
    assert len(table) == (0 if cut == "header only" else 1) and (table["seed"] == 0).all()
    results.append_result(out, fake_result(1))  # the run redone; the broken row is set aside, verbatim
    assert sorted(results.read_results(out)["seed"]) == ([1] if cut == "header only" else [0, 1])
    if cut != "header only":
        broken = text[:position].rsplit("\n", 1)[1]
        assert (tmp_path / "results.csv.rejected").read_text() == broken + "\n"


def nullcontext():
    import contextlib

    return contextlib.nullcontext()


# 5. no kill window between a finished run and its row


def test_a_finished_run_is_recorded_before_anything_else(folder, tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill right after the run, where the backup used to be gone already

    monkeypatch.setattr(grid, "write_hparams", killed)
    config = RunConfig("scratch", dataset=folder, **{k: v for k, v in TINY.items() if k != "quiet"})
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid([config], str(tmp_path), quiet=True)
    assert list(results.read_results(str(tmp_path))["key"]) == [config.key]


# 6. full-length keys


def test_run_keys_are_full_length(tmp_path):
    config = RunConfig("scratch", dataset="d")
    assert len(config.key) == 40 and config.key[:10] in config.name
    results.append_result(str(tmp_path), fake_result(0))
    assert list(results.read_results(str(tmp_path))["key"]) == [config.key]
    assert RunConfig("scratch", dataset="d", seed=1).key[:6] != config.key[:6]  # (a 24-bit prefix could collide)


# 7. duplicates in the grid are run once, with a warning


def test_duplicate_strategies_and_seeds_are_run_once(tmp_path, monkeypatch):
    calls = []

    def fake_run(config, **options):
        calls.append(config.key)
        return fake_result(config.seed)

    monkeypatch.setattr(executors, "run", fake_run)
    lines = []
    configs = grid.expand(["scratch", "scratch"], seeds=[0, 0], dataset="d")
    grid.run_grid(configs, str(tmp_path), echo=lines.append)
    assert len(calls) == 1 and "3 duplicate runs" in lines[0]


# 8. a corrupt backup is discarded with a message


@pytest.mark.parametrize("damage", ["state", "weights"])
def test_a_corrupt_backup_is_discarded_with_a_message(tmp_path, capsys, damage):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "epoch-2.weights.h5").write_bytes(b"not hdf5" if damage == "weights" else b"")
    state = {"epoch": 2, "weights": "epoch-2.weights.h5", "finished": False}
    (backup_dir / "state.json").write_text("{not json" if damage == "state" else json.dumps(state))
    assert RunBackup(str(backup_dir)).saved_epoch() == 0
    assert "cannot be used" in capsys.readouterr().out and not backup_dir.exists()


# 9. every numeric option is checked before any work


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--epochs", "0"), ("--batch-size", "0"), ("--samples-per-class", "0"), ("--backup-every", "0"),
        ("--samples-per-class", "-1"), ("--samples-per-class", "ten"), ("--seeds", "0"), ("--learning-rate", "-1"),
        ("--validation", "2.5"), ("--patience", "0"), ("--image-size", "0"),
    ],
)  # fmt: skip
def test_bad_numbers_name_their_flag_before_any_work(flag, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        load_app().main(["--dataset", "nowhere", "--out", str(tmp_path / "out"), flag, value])
    assert stopped.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_config_values_and_output_folders_fail_first(folder, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"epochs \(--epochs\) must be a whole number of at least 1"):
        RunConfig("scratch", epochs=0)
    with pytest.raises(ValueError, match="holds no runs"):
        grid.run_grid([], str(tmp_path / "empty"))
    a_file = tmp_path / "file"
    a_file.write_text("")
    arguments = ["--dataset", folder, *APP_ARGUMENTS]
    assert load_app().main([*arguments, "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert load_app().main([*arguments, "--out", str(tmp_path / "v"), "--validation", "0.01"]) == 2
    assert "leaves a class with no images" in capsys.readouterr().err
    assert not (tmp_path / "v" / "results.csv").exists()


# 10. data edge cases


def test_hidden_junk_files_are_ignored(folder, tmp_path):
    root = tmp_path / "junk"
    (root / "ant").mkdir(parents=True)
    (root / "bee").mkdir()
    for name in ("ant", "bee"):
        Image.new("RGB", (8, 8)).save(root / name / "0.png")
    (root / "ant" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    paths, labels, names = sources.list_image_folder(root)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["0.png", "0.png"] and names == ["ant", "bee"]


def test_single_class_and_inexact_imbalance_are_refused():
    images = np.zeros((10, 32, 32, 3), "uint8")
    with pytest.raises(ValueError, match="needs at least two class"):
        data.load((images, np.zeros(10, "int64")), validation=0)
    with pytest.raises(ValueError, match="multiple of 10"):
        splits.imbalanced_counts(1, 10)
    assert splits.imbalanced_counts(20, 3) == [20, 20, 2]


def test_a_missing_download_package_is_named(monkeypatch):
    import tensorflow_datasets as tfds

    class Builder:
        def download_and_prepare(self):
            raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Builder())
    with pytest.raises(ImportError, match="pip install importlib_resources"):
        sources.read_tfds("cifar10", download=True)
