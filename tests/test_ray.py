"""The grid on Ray (issue 15): same keys and accuracies as the local executor; a killed worker's run is redone once.

Each grid runs in its own process (as a user runs the app), with one TensorFlow thread per run in both executors.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_image_folder

from keras_l2t.running import executors

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
GRID = """
import sys
from keras_l2t.running import executors, grid
folder, out, executor, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
configs = grid.expand(["scratch", "ufm"], samples_per_class=[4], seeds=2, dataset=folder, family="matching",
                      epochs=epochs, batch_size=8, validation=3, source_weights=None, backup_every=1)
cpus = 1 if executor == "ray" else None
grid.run_grid(configs, out, quiet=True, executor=executors.make(executor, cpus_per_run=cpus))
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("tiny"))


def start_grid(folder, out, executor, epochs):
    environment = {**os.environ, **ONE_THREAD, "RAY_DEDUP_LOGS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", GRID, folder, str(out), executor, str(epochs)],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=400):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def results(out):
    return pd.read_csv(out / "results.csv").sort_values("key").reset_index(drop=True)


@pytest.mark.slow  # about 100 s (two grid processes, a Ray instance); the default run is at its 10-minute budget
def test_ray_and_local_grids_give_the_same_runs_and_accuracies(folder, tmp_path):
    local, ray = tmp_path / "local", tmp_path / "ray"
    finish(start_grid(folder, local, "local", 2))
    output = finish(start_grid(folder, ray, "ray", 2))
    assert "[4/4 |" in output  # the driver's progress line
    expected, got = results(local), results(ray)
    assert list(got["key"]) == list(expected["key"]) and len(got) == 4
    columns = ["train_accuracy", "validation_accuracy", "test_accuracy"]
    pd.testing.assert_frame_equal(got[columns], expected[columns])


def ray_workers_running_a_run() -> list[int]:
    """Pids of Ray worker processes executing `run_task` (Ray names a busy worker after its task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and command.startswith("ray::run_task"):
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow  # about 100 s
def test_a_run_whose_worker_is_killed_resumes_and_every_run_is_recorded_once(folder, tmp_path):
    out = tmp_path / "out"
    process = start_grid(folder, out, "ray", 12)
    deadline, killed = time.time() + 300, None
    while killed is None and time.time() < deadline and process.poll() is None:
        backups = list((out / "backup").glob("*/train/state.json")) if (out / "backup").exists() else []
        workers = ray_workers_running_a_run()
        if backups and workers:  # a run is in its middle: at least one epoch backed up, not finished
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, "no run was seen in progress"
    finish(process)
    table = results(out)
    assert len(table) == 4 and table["key"].is_unique
    assert (table["epochs_run"] == 12).all()
    assert not (out / "backup").exists() or not any((out / "backup").iterdir())


def test_a_ray_grid_runs_every_run_once_in_ray_workers_and_the_driver_writes_the_rows(folder, tmp_path, monkeypatch):
    import ray

    from keras_l2t.running import grid

    def not_here(*args, **kwargs):
        raise AssertionError("a run trained in the driver, not in a Ray worker")

    monkeypatch.setattr(executors, "run", not_here)  # the workers import their own, unpatched copy
    configs = grid.expand(["scratch"], samples_per_class=[4], seeds=2, dataset=folder, family="classic",
                          backbone="lenet5", weights=None, epochs=2, batch_size=8, validation=3)  # fmt: skip
    lines = []
    try:
        results = grid.run_grid(configs, str(tmp_path), quiet=True, echo=lines.append, executor=executors.make("ray"))
    finally:
        ray.shutdown()
    assert sorted(results["key"]) == sorted(config.key for config in configs) and len(results) == 2
    assert (results["epochs_run"] == 2).all() and results["test_accuracy"].between(0, 1).all()
    assert lines[0].startswith("2 runs: 0 already finished, 2 to go") and lines[-1].startswith("[2/2 |")
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3  # header and one row per run
    assert not any((tmp_path / "backup").iterdir())  # each backup removed once its row was written


def test_executor_names_and_options_are_checked():
    with pytest.raises(ValueError, match="local, ray"):
        executors.make("dask")
    with pytest.raises(ValueError, match="need --executor ray"):
        executors.make("local", gpus_per_run=0.5)
    with pytest.raises(ValueError, match="cpus_per_run"):
        executors.make("ray", cpus_per_run=0)
