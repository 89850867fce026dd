"""The meta health check and the meta schedules of L2TModel (issue 37)."""

import json
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
from test_l2t import batch, tiny_model

from keras_l2t.analysis import meta_plots
from keras_l2t.training import meta_health, meta_schedule, strategies
from keras_l2t.training.callbacks import MetaWeightsLogger, read_scalars
from keras_l2t.training.meta_health import MetaHealth
from keras_l2t.training.meta_schedule import MetaRate
from keras_l2t.training.optim import TorchAdam


def fit_with_health(model, *extra_callbacks, **health_options):
    """Fit a tiny model for 3 epochs of 2 iterations; return the probe's health callback and the warnings raised."""
    inputs, labels = batch()
    health = MetaHealth(inputs, **health_options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callbacks = [MetaRate(), health, *extra_callbacks]
        history = model.fit(inputs, labels, batch_size=3, epochs=3, verbose=0, callbacks=callbacks)
    health.history = history.history
    return health, [str(warning.message) for warning in caught if warning.category is RuntimeWarning]


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """An L2T-www run whose meta rate lets its meta-networks move: a probe (with TensorBoard) and no probe."""
    keras.utils.set_random_seed(12)
    model = tiny_model("l2t_www", meta_reach=2.0)  # 6 meta steps: rate 1/3
    model.compile()
    log_dir = tmp_path_factory.mktemp("moved")
    without_probe = MetaHealth()
    logger = MetaWeightsLogger(batch()[0], str(log_dir))  # the per-epoch scalars meta_plots draws
    health, caught = fit_with_health(model, without_probe, logger, log_dir=str(log_dir))
    return model, health, caught, without_probe, log_dir


def test_a_run_at_meta_rate_zero_is_flagged_as_could_not_move():
    keras.utils.set_random_seed(11)
    model = tiny_model("l2t_ww")
    model.compile(meta_optimizer=TorchAdam(0.0))
    health, caught = fit_with_health(model)
    assert health.result["verdict"] == "could not move" and health.result["bound"] == 0.0
    assert health.result["weight_change"] == 0.0 and health.result["meta_steps"] == 6
    assert len(caught) == 1 and "could not learn" in caught[0] and "meta_reach" in caught[0]


def test_a_run_whose_meta_networks_moved_is_not_flagged(moved_run):
    model, health, caught, _, _ = moved_run
    result = health.result
    assert float(model.meta_optimizer.learning_rate.numpy()) == pytest.approx(2.0 / 6)
    assert result["bound"] == pytest.approx(2.0) and result["verdict"] == "moved" and caught == []
    assert result["what_entropy_drop"] > 0.05 and result["what_ratio"] > 1.5  # what moved well off uniform
    assert 0 <= result["gamma_min"] <= result["gamma_max"] and result["gamma_max"] > 1.0


def test_a_run_that_could_move_but_did_not_is_flagged():
    keras.utils.set_random_seed(13)
    model = tiny_model("l2t_ww")
    model.compile(meta_optimizer=TorchAdam(1e-6))
    health, caught = fit_with_health(model, minimum_bound=0.0)  # any bound passes: only the movement is judged
    assert health.result["verdict"] == "did not move" and health.result["what_entropy_drop"] < 0.01
    assert len(caught) == 1 and "did not move" in caught[0]


def test_without_a_probe_the_check_judges_the_meta_weights(moved_run):
    _, health, _, without_probe, _ = moved_run
    assert without_probe.result["verdict"] == "moved" and "what_entropy_drop" not in without_probe.result
    assert without_probe.result["weight_change"] == health.result["weight_change"] > 0.01
    assert meta_health.verdict({"bound": 1.0, "weight_change": 0.001}) == "did not move"
    small = {
        "bound": 0.032,
        "weight_change": 0.017,
        "where_change": 0.68,
        "what_entropy_drop": 0.028,
        "what_ratio": 2.5,
    }
    assert meta_health.verdict(small) == "moved"  # measured on the probe: a small bound that still moved lambda
    assert meta_health.verdict({**small, "where_change": 0.03, "what_entropy_drop": 1e-4}) == "could not move"
    assert meta_health.verdict({"bound": 1.0, "weight_change": float("nan")}) == "diverged"
    assert meta_health.verdict({"bound": 0.001, "weight_change": float("nan")}) == "diverged"  # not "could not"


def test_the_figures_go_to_the_logs_and_to_tensorboard(moved_run):
    _, health, _, _, log_dir = moved_run
    assert len(health.history["meta_what_entropy_drop"]) == 3 and health.history["meta_bound"][0] == pytest.approx(2.0)
    scalars = read_scalars(str(log_dir / "meta"))
    assert [step for step, _ in scalars["health/where_change"]] == [0, 1, 2]
    assert scalars["health/where_change"][2][1] == pytest.approx(health.result["where_change"], rel=1e-6)


def _tag(model, index: int) -> str:
    source, target = model.pairs[index]
    return f"pair_{index}_s{source}_t{target}"


def test_the_probe_s_lambdas_and_what_weights_are_kept_and_drawn(moved_run, tmp_path):
    model, health, _, _, log_dir = moved_run
    saved = np.load(log_dir / "meta" / meta_health.WEIGHTS_FILE)
    end = meta_health.mean_weights(model, health.inputs)
    assert saved["pairs"].tolist() == [list(pair) for pair in model.pairs]
    np.testing.assert_allclose(saved["end_where"], end["where"], rtol=1e-5)
    moved = np.max(np.abs(saved["end_where"] - saved["start_where"]))
    assert moved == pytest.approx(health.result["where_change"], rel=1e-5)
    for index in range(len(model.pairs)):
        start, what = saved[f"start_what_pair{index}"], saved[f"end_what_pair{index}"]
        np.testing.assert_allclose(start, 1 / start.size, rtol=1e-5)  # the what network starts uniform
        assert what.sum() == pytest.approx(1.0, rel=1e-5) and what.max() * what.size > 1.5  # ... and moved
    meta_plots.plot_meta_weights({"moved": str(log_dir / "meta" / meta_health.WEIGHTS_FILE)}, str(tmp_path / "w.png"))
    channels = [saved[f"start_what_pair{index}"].size for index in range(len(model.pairs))]
    figure = meta_plots.plot_meta_trajectories({"moved": str(log_dir)}, str(tmp_path / "t.png"), channels)
    drawn = figure.axes[1].lines[0].get_ydata()  # pair 0's what entropy over its log C (at most 1: uniform)
    logged = [value for _, value in read_scalars(str(log_dir / "meta"))[f"what_entropy/{_tag(model, 0)}"]]
    np.testing.assert_allclose(drawn, np.asarray(logged) / np.log(channels[0]), rtol=1e-6)
    assert drawn.max() <= 1 + 1e-5 and drawn[-1] < 0.99  # it moved off uniform
    assert (tmp_path / "w.png").stat().st_size > 10_000 and (tmp_path / "t.png").stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match="L2T run"):
        meta_plots.plot_meta_trajectories({"empty": str(tmp_path)}, str(tmp_path / "none.png"))


def test_meta_steps_a_warm_up_and_meta_every_take_the_planned_meta_steps():
    """Same seed and batch: the reference, 4 meta steps per iteration, and a warm-up of 3 with 2 steps every 2."""
    inputs, labels = batch()
    runs = {}
    for options in ({}, {"meta_steps": 4}, {"meta_steps": 2, "meta_warmup": 3, "meta_every": 2}):
        keras.utils.set_random_seed(16)
        model = tiny_model("l2t_ww", **options)
        model.compile(meta_optimizer=TorchAdam(1e-2))
        before = [variable.numpy().copy() for variable in model.what[0].weights]
        logs = model.train_on_batch(inputs, labels, return_dict=True)  # the first real step's matching loss
        move = max(np.abs(b - v.numpy()).max() for b, v in zip(before, model.what[0].weights, strict=True))
        model.train_on_batch(inputs, labels)
        model.train_on_batch(inputs, labels)
        runs[len(runs)] = (float(logs["matching"]), move, int(model.meta_optimizer.iterations))
    (reference, _, reference_steps), (several, several_move, several_steps), (warmed, _, warmed_steps) = runs.values()
    assert [reference_steps, several_steps, warmed_steps] == [3, 12, 3 + 2 * 2]
    assert warmed_steps == meta_schedule.planned_meta_steps(3, meta_every=2, meta_steps=2, meta_warmup=3)
    assert several_move > 2 * runs[0][1]  # four steps on fresh look-aheads move what further than one
    assert several == pytest.approx(reference, rel=1e-6)  # meta steps come after the real step ...
    assert abs(warmed - reference) > 1e-3 * reference  # ... the warm-up before it: the target sees warmed-up weights


def test_strategies_callbacks_include_the_meta_rate_and_the_health_check():
    model = tiny_model("l2t_ww")
    model.compile()
    kinds = [type(callback) for callback in strategies.callbacks(model, 10)]
    assert MetaRate in kinds and MetaHealth in kinds
    plain = tiny_model("fm_uniform")
    plain.compile()
    assert MetaHealth not in [type(callback) for callback in strategies.callbacks(plain, 10)]


def test_the_schedule_options_are_checked():
    for options, text in (({"meta_steps": 0}, "meta_steps must be"), ({"meta_warmup": -1}, "meta_warmup must be"),
                          ({"meta_reach": 0.0}, "meta_reach must be")):  # fmt: skip
        with pytest.raises(ValueError, match=text):
            tiny_model("l2t_ww", **options)


def test_the_meta_rate_needs_the_run_length():
    model = tiny_model("l2t_ww", meta_reach=1.0)
    model.compile()
    callback = MetaRate()
    callback.set_model(model)
    callback.set_params({"epochs": 5, "steps": None})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        callback.on_train_begin()


def test_the_health_table_reads_the_results_column():
    health = {"bound": 0.02, "weight_change": 0.01, "where_change": 0.05, "what_entropy_drop": 0.0003,
              "what_ratio": 1.01, "meta_steps": 200, "meta_rate": 1e-4, "verdict": "could not move"}  # fmt: skip
    results = pd.DataFrame({"run": ["a", "b"], "meta_health": [json.dumps(health), None]})
    table = meta_health.health_table(results)
    assert "| a | 200 | 0.0001 | 0.02 | 0.03 % | 0.050 | - | could not move |" in table
    assert "| b |" not in table and meta_health.health_table(results.drop(columns="meta_health")) == ""


def test_experiment_probes_the_meta_networks_on_its_validation_examples(tmp_path):
    from keras_l2t.datasets import data
    from keras_l2t.running import experiment
    from keras_l2t.running.config import RunConfig
    from keras_l2t.training.callbacks import MetaWeightsLogger

    images = np.random.default_rng(4).integers(0, 256, (40, 32, 32, 3), dtype="uint8")
    splits = data.load((images, np.arange(40) % 2), backbone="vgg9", validation=0.2, test_fraction=0.2)
    config = RunConfig("l2t_ww", dataset="tiny", source_weights=None, epochs=2, out=str(tmp_path), verbose=0)
    model = strategies.build("l2t_ww", num_classes=2, source_weights=None, target="vgg9")
    callbacks, _, _ = experiment._callbacks(config, model, splits)
    health = next(callback for callback in callbacks if isinstance(callback, MetaHealth))
    logger = next(callback for callback in callbacks if isinstance(callback, MetaWeightsLogger))
    assert health.inputs is logger.inputs and health.writer is not None


def test_the_results_row_and_the_summary_carry_the_health_check(tmp_path):
    import dataclasses

    from keras_l2t.analysis import report
    from keras_l2t.core.paths import GridPaths
    from keras_l2t.running import results
    from keras_l2t.running.config import RunConfig

    config = RunConfig("l2t_ww", dataset="tiny", samples_per_class=10, epochs=2, out=str(tmp_path))
    health = {"bound": 0.0002, "weight_change": 0.0002, "where_change": 0.001, "what_entropy_drop": 1e-6,
              "what_ratio": 1.0, "meta_steps": 2, "meta_rate": 1e-4, "verdict": "could not move"}  # fmt: skip
    row = {**dataclasses.asdict(config), "run": config.name, "key": config.key, "network": config.network,
           "epochs_run": 2, "best_epoch": 2, "train_accuracy": 0.5, "wall_seconds": 1.0,
           "meta_health": json.dumps(health)}  # fmt: skip
    results.append_result(str(tmp_path), row)
    table = results.read_results(str(tmp_path))
    assert json.loads(table.loc[0, "meta_health"]) == health
    section = report._meta_drift_section(table, GridPaths(str(tmp_path)))
    assert "## How far the meta-networks moved" in section and f"| {config.name} | 2 | 0.0001 | 0.0002 |" in section
