"""Run a grid of strategies x samples per class x seeds, resumably, then write tables and plots.

Each finished run becomes one row of `<out>/results.csv`, written atomically (a new file, then a rename), so
Ctrl-C or a crash loses only the run in progress; running the same grid again skips the finished runs (matched
by `RunConfig.key`) and restarts the unfinished one from scratch.

>>> from keras_l2t import grid
>>> configs = grid.expand(["scratch", "l2t_ww"], samples_per_class=[10], seeds=[0, 1], dataset="cifar10")
>>> results = grid.run_grid(configs, "runs/demo")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import pandas as pd

from keras_l2t import stats, strategies
from keras_l2t.experiment import RunConfig, run
from keras_l2t.l2t import META_METHODS

MATCHING_ROUTINE = {"batch_size": 128, "validation": 1000, "backup_every": 10}  # a backup costs ~0.5 s
PRESETS = {
    "course": {
        "strategies": ["feature_extraction", "fine_tune_last", "full_fine_tune", "scratch"],
        "samples_per_class": [None],
        "seeds": [0],
        "epochs": 15,
        "batch_size": 64,
        "image_size": 64,
        "validation": 5000,
        "backbone": "squeezenet1_1",
    },
    "thesis": {
        "strategies": ["scratch", "ufm", "l2t_ww", "l2t_www"],
        "samples_per_class": [10, 30, 50, 100, 150],
        "seeds": list(range(30)),
        "epochs": 200,
        "family": "matching",
        **MATCHING_ROUTINE,
    },
    "quick": {  # 4 seeds: the fewest with which a two-sided Mann-Whitney test can reach p < 0.05
        "strategies": ["scratch", "ufm", "l2t_ww", "l2t_www"],
        "samples_per_class": [10, 20],
        "seeds": [0, 1, 2, 3],
        "epochs": 10,
        "family": "matching",
        **MATCHING_ROUTINE,
        "validation": 500,
    },
}
RESULT_COLUMNS = [
    "run", "key", "strategy", "network", "dataset", "samples_per_class", "imbalanced", "seed", "epochs_run",
    "best_epoch", "train_accuracy", "validation_accuracy", "test_accuracy", "wall_seconds",
]  # fmt: skip


def expand(strategy_names, samples_per_class=(None,), seeds=(0,), **fields) -> list[RunConfig]:
    """The runs of a grid, strategy by strategy, then samples per class, then seed.

    Args:
        strategy_names: registered strategies (unknown names raise, listing the registered ones).
        samples_per_class: N values; None (or "all") for the whole training set.
        seeds: seeds, or a number of seeds (0..n-1).
        **fields: `RunConfig` fields shared by every run. `family` is the loop `scratch` trains with (the only
            strategy in both families; the others keep their own). Without it, `scratch` trains with the
            matching methods' loop when the grid holds a matching method, so the comparison is fair, else
            the classic one. The thesis and quick presets set "matching", so their scratch runs alone too.

    Returns:
        The `RunConfig`s.

    Raises:
        ValueError: `family` is not "classic" or "matching".

    """
    for name in strategy_names:
        strategies.spec(name)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    scratch_family = _scratch_family(strategy_names, fields.pop("family", None))
    configs = []
    for name in strategy_names:
        family = scratch_family if name == "scratch" else None
        for samples in samples_per_class:
            samples = None if samples in (None, "all") else int(samples)
            for seed in seeds:
                configs.append(RunConfig(name, samples_per_class=samples, seed=seed, family=family, **fields))
    return configs


def _scratch_family(strategy_names, family: str | None) -> str | None:
    """The family `scratch` trains with in this grid (None: its own, "classic"); checks a requested one."""
    if family not in (None, "classic", "matching"):
        raise ValueError(f"Unknown family {family!r}; choose 'classic' or 'matching'.")
    if family is None and any(strategies.spec(name).family == "matching" for name in strategy_names):
        family = "matching"
    return family if family == "matching" else None


def read_results(out: str) -> pd.DataFrame:
    """The finished runs recorded in `<out>/results.csv` (an empty frame if none).

    Args:
        out: the grid's output folder.

    Returns:
        One row per finished run.

    """
    path = os.path.join(out, "results.csv")
    if not os.path.exists(path):
        return pd.DataFrame(columns=RESULT_COLUMNS + ["config"])
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"key": str, "samples_per_class": str})
    table["samples_per_class"] = [int(value) if value.isdigit() else value for value in table["samples_per_class"]]
    return table


def append_result(out: str, result: dict) -> pd.DataFrame:
    """Add one run's row to `<out>/results.csv` atomically (write a new file, then rename it over the old).

    Args:
        out: the grid's output folder.
        result: what `experiment.run` returned.

    Returns:
        The whole table after the append.

    """
    row = {column: result.get(column) for column in RESULT_COLUMNS}
    row["samples_per_class"] = "all" if row["samples_per_class"] is None else row["samples_per_class"]
    config_fields = {field.name for field in dataclasses.fields(RunConfig)}
    row["config"] = json.dumps({key: value for key, value in result.items() if key in config_fields})
    table = pd.concat([read_results(out), pd.DataFrame([row])], ignore_index=True)
    handle, temporary = tempfile.mkstemp(dir=out, prefix=".results.", suffix=".csv")
    with os.fdopen(handle, "w") as file:
        table.to_csv(file, index=False)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, os.path.join(out, "results.csv"))
    return table


def write_hparams(config: RunConfig, result: dict) -> None:
    """Record a run's config and final metrics for TensorBoard's HParams dashboard (`<out>/tb/<run>/`).

    Args:
        config: the run.
        result: its results.

    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    values = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in dataclasses.asdict(config).items()
        if key not in ("out", "verbose")
    }
    with tf.summary.create_file_writer(os.path.join(config.out, "tb", config.name)).as_default():
        hparams_api.hparams(values, trial_id=config.name)
        for metric in ("test_accuracy", "validation_accuracy", "train_accuracy", "best_epoch", "wall_seconds"):
            if result.get(metric) is not None:
                tf.summary.scalar(f"hparams/{metric}", float(result[metric]), step=0)


def _clear_partial(config: RunConfig) -> None:
    """Remove the logs of an interrupted run that left no backup (one with a backup resumes and keeps them)."""
    if os.path.isdir(config.backup_dir):
        return
    shutil.rmtree(os.path.join(config.out, "tb", config.name), ignore_errors=True)
    history = os.path.join(config.out, "history")
    for name in os.listdir(history) if os.path.isdir(history) else []:
        if name.startswith(config.name):
            os.remove(os.path.join(history, name))


def _estimate(config: RunConfig, finished: pd.DataFrame) -> float:
    for mask in (
        (finished["strategy"] == config.strategy) & (finished["samples_per_class"].astype(str) == str(
            config.samples_per_class if config.samples_per_class is not None else "all")),
        finished["strategy"] == config.strategy,
        finished["strategy"].notna(),
    ):  # fmt: skip
        seconds = finished.loc[mask, "wall_seconds"].astype(float)
        if len(seconds):
            return float(seconds.mean())
    return float("nan")


def _clock(seconds: float) -> str:
    return "?" if seconds != seconds else time.strftime("%H:%M:%S", time.gmtime(seconds))


def run_grid(configs: list[RunConfig], out: str, *, quiet: bool = False, echo=print) -> pd.DataFrame:
    """Run every config not yet in `<out>/results.csv`, one row per run as each finishes.

    Args:
        configs: from `expand` (their `out` is replaced by `out`).
        out: the output folder (results.csv, history/, tb/).
        quiet: no Keras progress bars, only one line per run.
        echo: where progress lines go.

    Returns:
        The results of these configs (finished earlier or now).

    """
    os.makedirs(out, exist_ok=True)
    configs = [dataclasses.replace(c, out=out, verbose=0 if quiet else c.verbose) for c in configs]
    wanted = {config.key for config in configs}
    done = set(read_results(out)["key"])
    pending = [config for config in configs if config.key not in done]
    echo(f"{len(configs)} runs: {len(configs) - len(pending)} already finished, {len(pending)} to go ({out})")
    started = time.time()
    for index, config in enumerate(pending):
        _clear_partial(config)
        result = run(config)
        write_hparams(config, result)
        finished = append_result(out, result)
        left = sum(_estimate(c, finished) for c in pending[index + 1 :])
        echo(
            f"[{len(configs) - len(pending) + index + 1}/{len(configs)} | elapsed {_clock(time.time() - started)}"
            f" | ~{_clock(left)} left] {config.strategy} {config.network} N={config.samples_per_class or 'all'}"
            f" seed {config.seed}: test {100 * (result['test_accuracy'] or 0):.1f} %, best epoch"
            f" {result['best_epoch']}/{result['epochs_run']}, {result['wall_seconds']:.0f} s"
        )
    results = read_results(out)
    return results[results["key"].isin(wanted)].reset_index(drop=True)


def report(results: pd.DataFrame, out: str, *, order=None, baseline: str | None = None, course: bool = False) -> str:
    """Write `<out>/summary.md`, `<out>/accuracy_vs_samples.png` and `<out>/learning_curves.png`.

    Args:
        results: from `run_grid`.
        out: the output folder.
        order: strategies in order (the Mann-Whitney baseline of each is the previous one by default).
        baseline: compare every strategy with this one instead.
        course: lead the summary with the course-style table.

    Returns:
        The summary's markdown text.

    """
    text = stats.summary(results, order, baseline, course=course)
    text += "\n![test accuracy against samples per class](accuracy_vs_samples.png)\n"
    text += "\n![learning curves with early-stop points](learning_curves.png)\n"
    text += _meta_drift_section(results, out)
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(text)
    if len(results):
        stats.plot_accuracy_vs_samples(results, os.path.join(out, "accuracy_vs_samples.png"), order)
        stats.plot_learning_curves(
            results, os.path.join(out, "history"), os.path.join(out, "learning_curves.png"), order
        )
    return text


def _meta_drift_section(results: pd.DataFrame, out: str) -> str:
    meta_runs = results.loc[results["strategy"].isin(META_METHODS), "run"]
    drift = stats.meta_weight_drift(os.path.join(out, "tb"), meta_runs) if len(meta_runs) else pd.DataFrame()
    if drift.empty:
        return ""
    return (
        "\n## How far the meta-networks moved\n\nWhere weights (lambda, mean over pairs) after the first and the last "
        "epoch, and the largest drop of a pair's what entropy below log C (the uniform start).\n\n"
        + stats.meta_drift_table(drift)
        + "\n"
    )


def compare(
    preset: str | None = None,
    *,
    out: str,
    strategy_names=None,
    samples_per_class=None,
    seeds=None,
    quiet: bool = False,
    baseline: str | None = None,
    echo=print,
    **fields,
) -> tuple[pd.DataFrame, str]:
    """The whole comparison: a preset with overrides, run resumably, then summary and plots.

    Args:
        preset: "course", "thesis", "quick" (see `PRESETS`) or None for the `RunConfig` defaults.
        out: the output folder.
        strategy_names: overrides the preset's strategies.
        samples_per_class: overrides its N values (None / "all" for the full training set).
        seeds: overrides its seeds (a list, or a number of seeds).
        quiet: one line per run instead of Keras progress bars.
        baseline: the Mann-Whitney baseline (default: each strategy against the previous one).
        echo: where progress and the summary go.
        **fields: `RunConfig` fields that override the preset's.

    Returns:
        (the results of the grid, the summary's markdown).

    """
    if preset is not None and preset not in PRESETS:
        raise KeyError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    settings = dict(PRESETS.get(preset, {"strategies": strategies.names("classic")}))
    preset_strategies = settings.pop("strategies")
    preset_samples = settings.pop("samples_per_class", [None])
    preset_seeds = settings.pop("seeds", [0])
    chosen = strategy_names or preset_strategies
    samples = samples_per_class or preset_samples
    seeds = seeds if seeds is not None else preset_seeds
    settings.update(fields)
    configs = expand(chosen, samples, seeds, **settings)
    results = run_grid(configs, out, quiet=quiet, echo=echo)
    text = report(results, out, order=chosen, baseline=baseline, course=preset == "course")
    echo(text)
    return results, text
