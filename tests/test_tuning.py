import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_app, tiny_image_folder

optuna = pytest.importorskip("optuna")

from keras_l2t.datasets import data  # noqa: E402
from keras_l2t.running import executors, grid, presets, tuning, tuning_data, tuning_report, tuning_space  # noqa: E402
from keras_l2t.running.tuning_space import Parameter  # noqa: E402

SETTINGS = {"epochs": 2, "batch_size": 8, "validation": 3, "source_weights": None, "family": "matching"}


def test_search_spaces_by_family_and_strategy():
    classic = {parameter.name for parameter in tuning_space.search_space("full_fine_tune")}
    assert classic == {"learning_rate", "weight_decay"}
    matching = {parameter.name: parameter for parameter in tuning_space.search_space("fm_uniform")}
    assert set(matching) == {"learning_rate", "weight_decay", "warmup_epochs", "matching_weight"}
    assert matching["learning_rate"].log and matching["warmup_epochs"].kind == "int"
    assert "matching_weight" not in {parameter.name for parameter in tuning_space.search_space("scratch", "matching")}
    assert tuning_space.search_space("scratch", "classic") == tuning_space.search_space("full_fine_tune")


def test_user_search_spaces_parse_and_fail_clearly():
    learning_rate, warmup = tuning_space.parse_space("learning_rate=1e-4:1e-1:log, warmup_epochs=0:5")
    assert learning_rate == Parameter("learning_rate", 1e-4, 1e-1, log=True)
    assert warmup == Parameter("warmup_epochs", 0, 5, kind="int")
    assert tuning_space.parse_space({"learning_rate": (0.01, 0.1)}) == (Parameter("learning_rate", 0.01, 0.1),)
    with pytest.raises(ValueError, match="'learning_rat' is not a run setting"):
        tuning_space.parse_space("learning_rat=1e-4:1e-1")
    with pytest.raises(ValueError, match="low < high"):
        tuning_space.parse_space("learning_rate=0.1:0.01")
    with pytest.raises(ValueError, match="low > 0 on a log scale"):
        tuning_space.parse_space("learning_rate=0:0.1:log")
    with pytest.raises(ValueError, match="must be numbers"):
        tuning_space.parse_space("learning_rate=a:b")
    with pytest.raises(ValueError, match="name=low:high"):
        tuning_space.parse_space("learning_rate")


def test_overrides_replace_and_unknown_fields_are_skipped_with_a_warning(monkeypatch):
    config = tuning.trial_config({**SETTINGS, "epochs": 6}, "fm_uniform", "out")
    echoed = []
    space = tuning_space.resolve_space(config, "learning_rate=0.01:0.1", echoed.append)
    by_name = {parameter.name: parameter for parameter in space}
    assert by_name["learning_rate"] == Parameter("learning_rate", 0.01, 0.1)
    assert by_name["warmup_epochs"].high == 3  # capped at half the epochs
    monkeypatch.setattr(tuning_space, "MATCHING_WEIGHT", Parameter("no_such_field", 1, 2))
    space = tuning_space.resolve_space(config, None, echoed.append)
    assert "no_such_field" not in {parameter.name for parameter in space}
    assert "no_such_field not tuned" in echoed[-1]


def test_trial_config_uses_its_own_seeds_and_folder():
    scratch = tuning.trial_config({**SETTINGS, "seeds": [0, 1], "samples_per_class": [10]}, "scratch", "out", seed=2)
    assert scratch.seed == tuning.TUNING_SEED_OFFSET + 2 and scratch.samples_per_class == 10
    assert scratch.resolved_family == "matching" and scratch.out == os.path.join("out", "trials", "scratch")
    assert tuning.trial_config(SETTINGS, "fm_uniform", "out").family is None


def test_grid_takes_per_strategy_settings():
    configs = grid.expand(["scratch", "ufm"], per_strategy={"ufm": {"learning_rate": 0.05}}, dataset="x")
    assert [config.learning_rate for config in configs] == [None, 0.05]


def test_the_report_callback_prunes(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    report = tuning.Report(trial)
    report.set_model(type("Model", (), {"stop_training": False})())
    report.on_epoch_end(0, {"loss": 1.0})  # not validated: nothing reported
    report.on_epoch_end(1, {"val_accuracy": 0.6})
    assert not report.pruned and report.reported
    report.on_epoch_end(2, {"val_accuracy": 0.4})
    assert report.pruned and report.model.stop_training
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].intermediate_values == {2: 0.6, 3: 0.4}


def test_best_settings_needs_a_complete_trial():
    with pytest.raises(ValueError, match="no complete trial"):
        tuning.best_settings(optuna.create_study())


@pytest.fixture
def unreadable_test_folder(tmp_path):
    folder = tiny_image_folder(tmp_path / "tiny")
    for image in (tmp_path / "tiny" / "test").rglob("*.png"):
        image.write_bytes(b"not an image")  # raises when decoded (root ignores chmod 000)
        image.chmod(0)
    return folder


def test_tuning_never_reads_the_test_split(unreadable_test_folder, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Cannot read image"):
        data.read(unreadable_test_folder)  # what a run of the comparison reads
    monkeypatch.setattr(tuning, "_report_history", None)  # local trials report as they train, not afterwards
    study = tuning.tune({**SETTINGS, "dataset": unreadable_test_folder}, "scratch", 1, str(tmp_path / "out"))
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and 0 <= trial.value <= 1 and set(trial.intermediate_values) == {1, 2}
    assert os.path.exists(tmp_path / "out" / "tuning.db")
    assert not (tmp_path / "out" / "trials" / "scratch" / "confusion").exists()  # no test split, not even one carved


class InProcessRay(executors.RayExecutor):
    """The Ray executor's path through tuning (batches of whole trials, reported afterwards), without Ray."""

    parallel_runs = 2

    def runs(self, configs):
        for config in configs:
            yield config, self.task(config)


@pytest.mark.slow  # 15 to 25 s: keeps the default file under a minute
def test_ray_trials_run_whole_in_batches_and_report_from_their_history(unreadable_test_folder, tmp_path):
    study = tuning.tune({**SETTINGS, "dataset": unreadable_test_folder}, "scratch", 2, str(tmp_path), InProcessRay())
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(set(trial.intermediate_values) == {1, 2} for trial in study.trials)


def test_a_dataset_without_its_own_test_split_is_refused(tmp_path):
    folder = tiny_image_folder(tmp_path / "tiny")
    os.rename(Path(folder) / "test", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="test split of its own"):
        tuning_data.training_source(folder)


KILLABLE = """
import sys, time
from keras_l2t.core import process
process.configure()
from keras_l2t.running import experiment, tuning
folder, out, log, mode = sys.argv[1:]
real_run, calls = experiment.run, []
def logged_run(config, *args, **options):
    with open(log, "a") as file:
        file.write(config.name + "\\n")
    calls.append(config.name)
    if mode == "hold-second" and len(calls) == 2:  # the trial the test kills waits for it
        time.sleep(600)
    return real_run(config, *args, **options)
experiment.run = logged_run
settings = {"epochs": 2, "batch_size": 8, "validation": 3, "source_weights": None, "family": "matching",
            "dataset": folder}
tuning.tune(settings, "scratch", 2, out)
"""


def _states(database: Path) -> list[str]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        try:
            return [row[0] for row in connection.execute("select state from trials order by number")]
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def test_a_killed_tuning_resumes_without_rerunning_a_finished_trial(tmp_path):
    folder = tiny_image_folder(tmp_path / "tiny")
    out, log, script = tmp_path / "out", tmp_path / "runs.log", tmp_path / "tune.py"
    script.write_text(KILLABLE)
    command = [sys.executable, str(script), folder, str(out), str(log)]
    process = subprocess.Popen(command + ["hold-second"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600  # generous: a loaded machine starts TensorFlow slowly
        while not (log.exists() and len(log.read_text().split()) == 2) and time.time() < deadline:
            time.sleep(0.2)
        assert _states(out / "tuning.db") == ["COMPLETE", "RUNNING"]
    finally:
        process.send_signal(signal.SIGKILL)  # in the middle of the second trial
        process.wait()
    subprocess.run(command + ["free"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    study = optuna.load_study(study_name="scratch", storage=f"sqlite:///{out / 'tuning.db'}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]  # 2 finished, as asked
    assert study.trials[2].params == study.trials[1].params and study.trials[2].user_attrs["retry_of"] == 1
    runs = log.read_text().split()
    assert len(runs) == 3 and runs.count(study.trials[0].user_attrs["run"]) == 1  # the finished one never again


def _study_of(values, name="fm_uniform"):
    study = optuna.create_study(study_name=name, direction="maximize")
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-3, 0.3, log=True),
        "warmup_epochs": optuna.distributions.IntDistribution(0, 10),
    }
    for index, value in enumerate(values):
        params = {"learning_rate": 1e-3 * 2**index, "warmup_epochs": index % 3}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    return study


def test_settings_table_and_study_figures(tmp_path):
    from keras_l2t.running import tuning_report

    studies = {"fm_uniform": _study_of([0.2, 0.5, 0.3, 0.4, 0.1]), "scratch": _study_of([0.3, 0.2], "scratch")}
    table = tuning_report.settings_table(studies)
    assert "| fm_uniform | 0.002 | 1 | 0.500 | 5 / 0 / 0 |" in table
    assert "| scratch | 0.001 | 0 | 0.300 | 2 / 0 / 0 |" in table
    assert tuning_report.plot_study(studies["fm_uniform"], str(tmp_path / "a.png")) == ""  # importances drawn
    note = tuning_report.plot_study(studies["scratch"], str(tmp_path / "b.png"))
    assert "4 complete trials (2 here)" in note and (tmp_path / "b.png").stat().st_size > 0


def test_tuned_row_beside_untuned_row():
    import pandas as pd

    from keras_l2t.running import tuning_report

    def results(accuracies):
        return pd.DataFrame(
            {"strategy": "scratch", "samples_per_class": 10, "test_accuracy": accuracies, "diverged_epoch": None}
        )

    table = tuning_report.tuned_against_untuned(results([0.1, 0.3]), results([0.4, 0.4]))
    rows = [line for line in table.splitlines() if line.startswith("| scratch")]
    assert rows == ["| scratch | 10 | untuned | 20.0 +- 14.1 | 2 |", "| scratch | 10 | tuned | 40.0 +- 0.0 | 2 |"]


@pytest.mark.slow  # about 2 minutes: 4 trials and 8 runs
def test_compare_tuned_runs_both_comparisons_and_writes_the_summary(tmp_path):
    from keras_l2t.running import tuning_report

    folder = tiny_image_folder(tmp_path / "readable")
    settings = {**SETTINGS, "dataset": folder, "seeds": [0, 1], "samples_per_class": [None]}
    text = tuning_report.compare_tuned(None, str(tmp_path / "out"), ["scratch", "ufm"], trials=2, **settings)
    tuned = grid.read_results(str(tmp_path / "out" / "tuned"))
    best = {
        name: tuning.best_settings(tuning._study(str(tmp_path / "out" / "tuning"), name, 0, 1, 2))
        for name in ("scratch", "ufm")
    }
    fields = {key: value for key, value in settings.items() if key not in ("seeds", "samples_per_class")}
    expected = grid.expand(["scratch", "ufm"], [None], [0, 1], per_strategy=best, **fields)
    assert sorted(tuned["key"]) == sorted(config.key for config in expected)  # each strategy ran with its best
    assert len(grid.read_results(str(tmp_path / "out" / "untuned"))) == 4
    assert "| ufm | all | tuned |" in text and "Budget per strategy" in text
    assert (tmp_path / "out" / "tuning_summary.md").read_text() == text


def test_the_app_tunes_on_request(capsys):
    from keras_l2t.running import presets
    from keras_l2t.training import strategies

    app = load_app()
    assert app.parse(["--dataset", "x", "--tune"], presets.names(), strategies.names()).tune == 8
    assert app.parse(["--dataset", "x", "--tune", "3"], presets.names(), strategies.names()).tune == 3
    assert app.main(["--dataset", "/no/such/folder", "--search-space", "learning_rate=1e-3:1e-1"]) == 2
    assert "--search-space needs --tune" in capsys.readouterr().err


def test_trials_start_from_a_preset_s_own_settings_of_the_strategy_unless_the_user_gives_them(tmp_path):
    classic = presets.get_config("quick")["parts"]["classic"]
    assert tuning.trial_config(classic, "feature_extraction", str(tmp_path)).head_init == "zeros"
    assert tuning.trial_config(classic, "scratch", str(tmp_path)).head_init == "glorot_uniform"
    matching = presets.get_config("quick")["parts"]["matching"]
    assert tuning.trial_config(matching, "l2t_ww", str(tmp_path)).warmup_epochs == 6
    parts = tuning_report._parts("quick", None, {"head_init": "glorot_uniform"})
    assert parts["classic"][0]["per_strategy"]["feature_extraction"] == {}  # the user's head for every strategy
    assert tuning.trial_config(parts["classic"][0], "feature_extraction", str(tmp_path)).head_init == "glorot_uniform"
