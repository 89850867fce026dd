import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import load_app, tiny_image_folder

from keras_l2t.analysis import accuracy_plots, report, stats
from keras_l2t.running import executors, experiment, grid, presets, tuning
from keras_l2t.running.results import read_results
from keras_l2t.training.callbacks import read_scalars


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("tiny"))


SETTINGS = {"epochs": 2, "batch_size": 8, "validation": 3, "source_weights": None}


def with_interrupt(callbacks_of_a_run):
    """Wrap `experiment._callbacks` so that fit raises KeyboardInterrupt after its first epoch is backed up."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    def wrapped(*args, **kwargs):
        callbacks, early_stop, backup = callbacks_of_a_run(*args, **kwargs)
        return callbacks + [Interrupt()], early_stop, backup

    return wrapped


def test_expand_orders_runs_and_trains_scratch_like_the_matching_methods():
    configs = grid.expand(["scratch", "ufm"], samples_per_class=[10, "all"], seeds=2, dataset="x")
    assert [(c.strategy, c.samples_per_class, c.seed) for c in configs][:3] == [
        ("scratch", 10, 0),
        ("scratch", 10, 1),
        ("scratch", None, 0),
    ]
    assert configs[0].resolved_family == "matching" and configs[0].network == "vgg9"
    assert grid.expand(["scratch"], dataset="x")[0].resolved_family == "classic"
    with pytest.raises(KeyError, match="l2t_ww"):
        grid.expand(["l2t_w"])


@pytest.mark.parametrize("preset", ["thesis", "quick"])
def test_matching_presets_train_scratch_alone_as_the_matching_baseline(preset):
    settings = grid.PRESETS[preset]
    settings = settings["parts"]["matching"] if "parts" in settings else settings
    settings = {
        k: v for k, v in settings.items() if k not in ("strategies", "samples_per_class", "seeds", "description")
    }
    alone = grid.expand(["scratch"], [10], [0], **settings)[0]
    beside = grid.expand(["scratch", "ufm"], [10], [0], **settings)[0]
    assert alone.resolved_family == "matching" and alone.network == "vgg9"
    assert alone.key == beside.key  # a missing scratch run of a grid can be rerun on its own


def test_family_option_of_a_grid():
    chosen = grid.expand(["scratch", "ufm"], family="classic")
    assert [c.resolved_family for c in chosen] == ["classic", "matching"]
    assert grid.expand(["scratch"], family="matching")[0].network == "vgg9"
    with pytest.raises(ValueError, match="'classic' or 'matching'"):
        grid.expand(["scratch"], family="hybrid")


def test_a_grid_is_resumable_and_reports(folder, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    options = dict(strategy_names=["scratch", "ufm"], samples_per_class=[2, 3], seeds=1, quiet=True)
    calls = []
    real_run = executors.run

    def interrupted_run(config, **options):
        calls.append(config.name)
        if len(calls) == 3:  # Ctrl-C after the first epoch of the third run was backed up
            with monkeypatch.context() as patch:
                patch.setattr(experiment, "_callbacks", with_interrupt(experiment._callbacks))
                real_run(config, **options)
        return real_run(config, **options)

    monkeypatch.setattr(executors, "run", interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        grid.compare("thesis", out=out, dataset=folder, **options, **SETTINGS, backup_every=1, backup_seconds=0)
    assert len(read_results(out)) == 2  # the finished runs survive Ctrl-C
    assert (Path(out) / "backup" / calls[2] / "train" / "state.json").exists()  # and the interrupted one resumes
    monkeypatch.setattr(executors, "run", real_run)
    lines = []
    results, text = grid.compare("thesis", out=out, dataset=folder, echo=lines.append, **options, **SETTINGS)
    assert lines[0].startswith("4 runs: 2 already finished, 2 to go")
    assert len(results) == 4 and results["key"].is_unique
    assert set(results["samples_per_class"].astype(str)) == {"2", "3"}
    assert results["test_accuracy"].between(0, 1).all() and (results["epochs_run"] == 2).all()
    resumed_history = pd.read_csv(Path(out) / "history" / f"{calls[2]}.csv")  # its first epoch was kept
    assert list(resumed_history["epoch"]) == [0, 1] and not (Path(out) / "backup" / calls[2]).exists()
    assert "Mann-Whitney" in text and "| ufm |" in text and (Path(out) / "summary.md").read_text() == text
    assert (Path(out) / "accuracy_vs_samples.png").stat().st_size > 10_000
    assert (Path(out) / "learning_curves.png").stat().st_size > 10_000
    run_dir = Path(out) / "tb" / results["run"][0]
    assert "hparams/test_accuracy" in read_scalars(str(run_dir)) and (run_dir / "train").is_dir()
    again = []
    grid.compare("thesis", out=out, dataset=folder, echo=again.append, **options, **SETTINGS)
    assert again[0].startswith("4 runs: 4 already finished, 0 to go") and len(read_results(out)) == 4


@pytest.mark.slow  # about a minute: a whole preset grid on tiny data
def test_the_quick_preset_runs_both_families_in_their_own_folders_and_sums_them_up(folder, tmp_path):
    out = tmp_path / "quick"
    lines = []
    results, text = grid.compare(
        "quick", out=str(out), dataset=folder, strategy_names=["feature_extraction", "scratch", "fm_uniform"],
        samples_per_class=[2], seeds=1, backbone="vgg9", weights=None, image_size=32, epochs=1, batch_size=8,
        validation=3, source_weights=None, quiet=True, echo=lines.append,
    )  # fmt: skip
    assert sorted(zip(results["part"], results["strategy"], results["network"], strict=True)) == [
        ("classic", "feature_extraction", "vgg9"),
        ("classic", "scratch", "vgg9"),
        ("matching", "fm_uniform", "resnet32->vgg9"),
        ("matching", "scratch", "vgg9"),
    ]
    for part in ("classic", "matching"):
        assert len(read_results(str(out / part))) == 2 and (out / part / "summary.md").exists()
        assert f"]({part}/accuracy_vs_samples.png)" in text
    assert (out / "summary.md").read_text() == text and text.index("# classic") < text.index("# matching")
    with pytest.raises(KeyError, match="nonexistent_strategy"):
        grid.compare("quick", out=str(out), dataset=folder, strategy_names=["nonexistent_strategy"])


@pytest.mark.slow  # about a minute: a whole preset grid on tiny data
def test_course_preset_prints_the_course_table(folder, tmp_path):
    lines = []
    _, text = grid.compare(
        "course",
        out=str(tmp_path),
        dataset=folder,
        backbone="vgg9",
        weights=None,
        image_size=32,
        epochs=1,
        batch_size=8,
        validation=3,
        echo=lines.append,
        quiet=True,
    )
    assert "| feature_extraction | vgg9 |" in text and "Validation picks" in text
    assert text.index("## Strategies") < text.index("## Test accuracy by samples per class")


def test_mann_whitney_against_a_baseline():
    rows = [("a", 10, 0.1 + 0.01 * seed) for seed in range(6)] + [("b", 10, 0.5 + 0.01 * seed) for seed in range(6)]
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "test_accuracy"])
    tests = stats.mann_whitney(results)
    assert len(tests) == 1 and tests["p_value"][0] == pytest.approx(0.0022, abs=1e-4) and tests["significant"][0]
    assert "52.5 ± 1.9* (6)" in stats.accuracy_table(results)


def test_tied_runs_get_the_exact_p_value_not_the_normal_approximation():
    rows = [("a", 100, 0.0)] * 4 + [("b", 100, value) for value in (0.208, 0.203, 0.095, 0.164)]  # minority: 0 ties
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "test_accuracy"])
    test = stats.mann_whitney(results).iloc[0]
    assert test["U"] == 16 and test["p_value"] == pytest.approx(2 / 70)  # the normal approximation gives 0.021
    one_run = stats.mann_whitney(pd.concat([results, results.iloc[:1].assign(strategy="c")]), ["a", "c"])
    assert one_run["U"].tolist() == [2] and one_run["too_few_runs"].all()  # 1 v 4 runs, all tied: no crash, no claim


@pytest.mark.parametrize("runs, baseline_runs, enough", [(1, 1, False), (3, 3, False), (3, 4, False), (4, 4, True),
                                                           (3, 5, True), (2, 8, True), (2, 7, False)])  # fmt: skip
def test_a_p_value_that_cannot_reach_significance_says_so(runs, baseline_runs, enough):
    rows = [("a", 10, 0.1 + 0.01 * seed) for seed in range(baseline_runs)]
    rows += [("b", 10, 0.5 + 0.01 * seed) for seed in range(runs)]  # every b above every a: the smallest p
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "test_accuracy"])
    test = stats.mann_whitney(results).iloc[0]
    assert test["p_value"] == pytest.approx(stats.smallest_p_value(runs, baseline_runs))
    assert test["too_few_runs"] == (not enough) and test["significant"] == enough
    note = f"({runs} v {baseline_runs} runs: too few for p < 0.05)"
    assert (note in stats.accuracy_table(results)) == (not enough)


def test_seed_table_puts_each_seed_in_its_column():
    rows = [("a", 10, 1, 0.25), ("b", 10, 0, 0.5), ("a", 10, 0, 0.125), ("a", 50, 0, 0.75)]
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "seed", "test_accuracy"])
    text = stats.seed_table(results, order=["a", "b"])
    assert "| method | seed 0 | seed 1 |" in text and "| a | 12.5 | 25.0 |" in text and "| b | 50.0 |  |" in text
    assert text.index("N = 10:") < text.index("N = 50:") and "| a | 75.0 |  |" in text


def test_accuracy_plot_shows_every_run_beside_the_mean(tmp_path):
    rows = [("a", 10, 0.2), ("a", 10, 0.4), ("a", 50, 0.6), ("b", 10, 0.3)]
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "test_accuracy"])
    figure = accuracy_plots.plot_accuracy_vs_samples(results, str(tmp_path / "plot.png"), order=["a", "b"])
    assert (tmp_path / "plot.png").stat().st_size > 0
    axis = figure.axes[0]
    scatters = [item for item in axis.collections if type(item).__name__ == "PathCollection"]
    dots = [collection.get_offsets()[:, 1] for collection in scatters]
    assert sorted(np.concatenate(dots).tolist()) == pytest.approx([20, 30, 40, 60])  # every run, in %
    means = [line.get_ydata().tolist() for line in axis.lines if line.get_marker() == "o"]
    assert means == [pytest.approx([30, 60]), pytest.approx([30])]


def test_app_errors_say_what_to_do(capsys, tmp_path, folder):
    module = load_app()
    assert module.main(["--dataset", folder, "--strategies", "l2t_wwww", "--out", str(tmp_path)]) == 2
    assert "Registered strategies" in capsys.readouterr().err
    assert module.main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "TFDS_DATA_DIR" in capsys.readouterr().err
    arguments = [
        "--dataset",
        folder,
        "--preset",
        "none",
        "--strategies",
        "ufm",
        "--out",
        str(tmp_path),
        "--epochs",
        "1",
    ]
    assert module.main(arguments + ["--source-weights", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert module.main(arguments + ["--source-weights", "none", "--target", "lenet5"]) == 2
    assert "different input preprocessing" in capsys.readouterr().err


def test_app_passes_the_family_of_scratch_to_the_grid(monkeypatch):
    module = load_app()
    calls = []
    monkeypatch.setattr(grid, "compare", lambda preset, **options: calls.append((preset, options)))
    assert module.main(["--dataset", "x", "--preset", "thesis", "--strategies", "scratch", "--family", "classic"]) == 0
    assert calls[0][0] == "thesis" and calls[0][1]["family"] == "classic"
    assert module.main(["--dataset", "x", "--strategies", "scratch"]) == 0
    assert "family" not in calls[1][1]  # the grid decides
    assert module.main(["--dataset", "x", "--preset", "none"]) == 0 and calls[2][0] is None
    assert module.main(["--dataset", "x"]) == 0  # --dataset alone runs the quick preset, the CIFAR-10 demo
    assert calls[3][0] == "quick" and calls[3][1]["out"] == "runs/quick"


@pytest.mark.parametrize(
    "own", [["--strategies", "feature_extraction"], ["--backbone", "mobilenet_v2"], ["--samples-per-class", "10"]]
)
def test_naming_your_own_run_gives_the_run_defaults_and_says_so(monkeypatch, capsys, own):
    module = load_app()
    calls = []
    monkeypatch.setattr(grid, "compare", lambda preset, **options: calls.append((preset, options)))
    assert module.main(["--dataset", "my_photos", *own]) == 0
    assert calls[0][0] is None and calls[0][1]["out"] == "runs/compare"  # not the quick preset's demo settings
    assert "No --preset" in capsys.readouterr().out
    assert module.main(["--dataset", "my_photos", "--preset", "quick", *own]) == 0 and calls[1][0] == "quick"


def test_augment_none_reaches_the_grid_as_none_and_weights_none_as_random_init(monkeypatch):
    module = load_app()
    calls = []
    monkeypatch.setattr(grid, "compare", lambda preset, **options: calls.append((preset, options)))
    assert module.main(["--dataset", "x", "--preset", "none", "--augment", "none", "--weights", "none"]) == 0
    assert calls[0][1]["augment"] == "none" and calls[0][1]["weights"] is None


def test_a_preset_part_header_describes_what_runs():
    part = presets.get_config("quick")["parts"]["classic"]
    assert grid._description(part, part["strategies"], {}) == part["description"]
    changed = grid._description(part, ["feature_extraction"], {"backbone": "mobilenet_v2", "image_size": 160})
    assert "SqueezeNet" not in changed and "backbone mobilenet_v2" in changed and "image_size 160" in changed


def test_a_preset_part_s_routine_keeps_its_run_settings_and_drops_its_grid():
    routine = presets.routine("quick", "matching")
    assert routine["epochs"] == 60 and routine["meta_every"] == 5 and routine["family"] == "matching"
    assert not {"strategies", "samples_per_class", "seeds", "per_strategy", "description"} & set(routine)
    with pytest.raises(KeyError, match="its parts: classic, matching"):
        presets.routine("quick", "matchin")


def test_per_class_accuracy_and_the_confusion_matrix(tmp_path):
    root = tiny_image_folder(tmp_path / "data", train=14, seed=1)
    out = tmp_path / "out"
    results, text = grid.compare(
        None, out=str(out), dataset=root, strategy_names=["scratch", "feature_extraction"], samples_per_class=[10],
        imbalanced=True, backbone="lenet5", weights=None, epochs=2, batch_size=8, validation=3, quiet=True,
        echo=lambda line: None,
    )  # fmt: skip
    per_class = json.loads(results["per_class_accuracy"][0])
    assert list(per_class) == ["ant", "bee", "cow"]
    confusion = json.loads((out / "confusion" / f"{results['run'][0]}.json").read_text())
    counts = np.array(confusion["confusion"])
    assert counts.sum() == 12 and counts.sum(axis=1).tolist() == [4, 4, 4]  # rows: the true classes
    assert counts.trace() / 12 == pytest.approx(results["test_accuracy"][0])
    assert [per_class[name] for name in ("ant", "bee", "cow")] == pytest.approx(np.diag(counts) / 4, abs=1e-4)
    assert "## Test accuracy per class (imbalanced runs; the minority class first" in text
    assert "| method | N | runs | cow | ant | bee |" in text  # the shrunk last class first
    minority = text[text.index("tests of the minority class's test accuracy") :]
    assert "| 10 | feature_extraction | scratch | " in minority  # a test per strategy after the first
    assert (out / "confusion_matrix.png").stat().st_size > 5_000 and "confusion_matrix.png" in text
    assert (out / "per_class_accuracy.png").stat().st_size > 5_000 and "per_class_accuracy.png" in text


def test_minority_tests_compare_the_last_class_not_the_overall_accuracy():
    rows = [("a", 10, 0.9, f'{{"ant": 0.9, "cow": {0.1 + 0.01 * seed}}}') for seed in range(4)]
    rows += [("b", 10, 0.3, f'{{"ant": 0.1, "cow": {0.5 + 0.01 * seed}}}') for seed in range(4)]
    rows += [("b", 10, 0.3, None)]  # a run without per-class accuracy is left out, not counted
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "test_accuracy", "per_class_accuracy"])
    assert report.minority_accuracy(results).tolist()[:5] == pytest.approx([0.1, 0.11, 0.12, 0.13, 0.5])
    text = report.minority_tests(results, order=["a", "b"])
    assert "Mann-Whitney U tests of the minority class's test accuracy" in text
    assert "| 10 | b | a | 16 | 0.0286 * |" in text  # 4 v 4 runs, every b above every a: the smallest p


def test_the_per_class_plot_draws_each_strategy_mean_minority_first(tmp_path):
    rows = [("a", 100, '{"ant": 0.5, "bee": 0.25, "cow": 0.1}'), ("a", 100, '{"ant": 0.7, "bee": 0.75, "cow": 0.3}'),
            ("b", 100, '{"ant": 0.9, "bee": 0.8, "cow": 0.6}')]  # fmt: skip
    results = pd.DataFrame(rows, columns=["strategy", "samples_per_class", "per_class_accuracy"])
    figure = report.plot_per_class(results, str(tmp_path / "bars.png"), order=["b", "a"])
    assert (tmp_path / "bars.png").stat().st_size > 5_000
    axis = figure.axes[0]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["cow", "ant", "bee"]
    heights = [[bar.get_height() for bar in container] for container in axis.containers]
    assert heights == [pytest.approx([60, 90, 80]), pytest.approx([20, 60, 50])]  # b, then a (mean of 2 runs)
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["b, N = 100 (1 run)", "a, N = 100 (2 runs)"]


class _Expanded(Exception):
    """Raised by a stand-in for `grid.expand` to stop a comparison once its runs are known."""


def _quick_matching_configs(monkeypatch, tmp_path, **fields) -> dict:
    real = getattr(grid.expand, "real", grid.expand)

    def expand(*args, **kwargs):
        raise _Expanded(real(*args, **kwargs))

    expand.real = real
    monkeypatch.setattr(grid, "expand", expand)
    monkeypatch.delitem(presets.PRESETS["quick"]["parts"], "classic", raising=False)
    with pytest.raises(_Expanded) as raised:
        grid.compare("quick", out=str(tmp_path), strategy_names=["scratch", "fm_uniform", "l2t_ww"], **fields)
    return {config.strategy: config for config in raised.value.args[0] if config.seed == 0}


def test_the_quick_preset_runs_each_strategy_with_its_tuned_recipe_unless_the_user_sets_one(monkeypatch, tmp_path):
    configs = _quick_matching_configs(monkeypatch, tmp_path)
    assert configs["scratch"].learning_rate == presets.QUICK_TUNED["scratch"]["learning_rate"]
    assert configs["l2t_ww"].matching_weight == presets.QUICK_TUNED["l2t_ww"]["matching_weight"]
    assert configs["scratch"].learning_rate != configs["fm_uniform"].learning_rate
    given = _quick_matching_configs(monkeypatch, tmp_path, learning_rate=0.05)
    assert {config.learning_rate for config in given.values()} == {0.05}  # the user's, for every strategy
    assert given["fm_uniform"].warmup_epochs == presets.QUICK_TUNED["fm_uniform"]["warmup_epochs"]  # the rest kept
    assert "per_strategy" not in presets.get_config("thesis")  # the thesis keeps the reference recipe


def test_the_quick_preset_recipes_are_the_committed_study_s_best_trials():
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{Path(__file__).parents[1] / 'docs' / 'tuning_quick_n10.db'}"
    for name, recipe in presets.QUICK_TUNED.items():
        best = tuning.best_settings(optuna.load_study(study_name=name, storage=storage))
        assert recipe.keys() == best.keys()
        for key, value in recipe.items():
            assert value == pytest.approx(best[key], rel=5e-3), (name, key)
