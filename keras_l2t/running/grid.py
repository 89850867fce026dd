"""Run a grid of strategies x samples per class x seeds, resumably, then report.

Each finished run becomes one row of `<out>/results.csv` (`keras_l2t.running.results`), so Ctrl-C or a crash loses only
the run in progress, which resumes from its backup; running the same grid again skips the finished runs
(matched by `RunConfig.key`).

>>> from keras_l2t import grid
>>> configs = grid.expand(["scratch", "l2t_ww"], samples_per_class=[10], seeds=[0, 1], dataset="cifar10")
>>> results = grid.run_grid(configs, "runs/demo")
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time

import pandas as pd

from keras_l2t.analysis import sequential
from keras_l2t.analysis.report import picked_runs, report
from keras_l2t.core.paths import GridPaths
from keras_l2t.running import executors, presets
from keras_l2t.running.config import RunConfig, parse_samples, samples_label
from keras_l2t.running.results import (
    append_result,
    lock,
    read_results,
    remove_finished_backups,
)
from keras_l2t.training import strategies
from keras_l2t.training.callbacks import write_hparams

PRESETS = presets.PRESETS  # the presets, by name (see `keras_l2t.running.presets`)
KEEP_MODELS = ("best", "all", "none")


def expand(strategy_names, samples_per_class=(None,), seeds=(0,), **fields) -> list[RunConfig]:
    """The runs of a grid, strategy by strategy, then samples per class, then seed.

    Args:
        strategy_names: registered strategies (unknown names raise, listing the registered ones).
        samples_per_class: N values; None (or "all") for the whole training set.
        seeds: seeds, or a number of seeds (0..n-1).
        **fields: `RunConfig` fields shared by every run. `family` is the loop `scratch` trains with (the only
            strategy in both families; the others keep their own), decided by `strategies.scratch_family`:
            without it, "matching" when the grid holds a matching method, else "classic". The thesis and quick
            presets set "matching", so that their scratch runs alone are the same baseline. `per_strategy`
            (strategy name -> fields) overrides them for one strategy (tuned settings, `keras_l2t.running.tuning`).

    Raises:
        ValueError: `family` is not "classic" or "matching".

    """
    for name in strategy_names:
        strategies.spec(name)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    per_strategy = fields.pop("per_strategy", None) or {}
    scratch_family = strategies.scratch_family(strategy_names, fields.pop("family", None))
    scratch_family = scratch_family if scratch_family != strategies.spec("scratch").family else None  # same key
    configs = []
    for name in strategy_names:
        family = scratch_family if name == "scratch" else None
        own = {**fields, **per_strategy.get(name, {})}
        for samples in samples_per_class:
            for seed in seeds:
                configs.append(
                    RunConfig(name, samples_per_class=parse_samples(samples), seed=seed, family=family, **own)
                )
    return configs


def _estimate(config: RunConfig, finished: pd.DataFrame) -> float:
    for mask in (
        (finished["strategy"] == config.strategy)
        & (finished["samples_per_class"].astype(str) == str(samples_label(config.samples_per_class))),
        finished["strategy"] == config.strategy,
        finished["strategy"].notna(),
    ):  # fmt: skip
        seconds = finished.loc[mask, "wall_seconds"].astype(float)
        if len(seconds):
            return float(seconds.mean())
    return float("nan")


def _clock(seconds: float) -> str:
    return "?" if seconds != seconds else time.strftime("%H:%M:%S", time.gmtime(seconds))


def run_grid(configs: list[RunConfig], out: str, *, quiet: bool = False, echo=print, executor=None) -> pd.DataFrame:
    """Run every config not yet in `<out>/results.csv`, one row per run as each finishes.

    Args:
        configs: from `expand` (their `out` is replaced by `out`).
        out: the output folder (results.csv, history/, tb/).
        quiet: no Keras progress bars, only one line per run.
        echo: where progress lines go.
        executor: where runs execute (`executors.LocalExecutor`, the default, or `executors.RayExecutor`); this
            process stays the only writer of results.csv whichever it is.

    Returns:
        The results of these configs (finished earlier or now).

    """
    check_output_folder(out)
    with lock(out):
        return _run_grid(configs, out, quiet, echo, executor or executors.LocalExecutor())


def check_output_folder(out: str) -> None:
    """Make sure `out` is (or can become) a folder this process can write, before any work is done.

    Raises:
        ValueError: `out` is a file, or cannot be created or written to (the message says which).

    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing).")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(
            f"--out {out} cannot be written to ({error.strerror}); choose a folder you can write."
        ) from None


def _unique(configs: list[RunConfig], echo) -> list[RunConfig]:
    unique = list({config.key: config for config in configs}.values())
    if len(unique) < len(configs):
        echo(f"warning: {len(configs) - len(unique)} duplicate runs in the grid (a strategy or seed given twice) "
             "are run once")  # fmt: skip
    return unique


def _run_grid(configs: list[RunConfig], out: str, quiet: bool, echo, executor) -> pd.DataFrame:
    configs = _unique([dataclasses.replace(c, out=out, verbose=0 if quiet else c.verbose) for c in configs], echo)
    if not configs:
        raise ValueError("The grid holds no runs: give at least one strategy, sample size and seed.")
    wanted = {config.key for config in configs}
    recorded = read_results(out)
    remove_finished_backups(out, recorded)  # left by a kill between a row and its removal
    done = set(recorded["key"])
    pending = [config for config in configs if config.key not in done]
    echo(f"{len(configs)} runs: {len(configs) - len(pending)} already finished, {len(pending)} to go ({out})")
    started, left_to_run = time.time(), list(pending)
    for index, (config, result) in enumerate(executor.runs(pending)):
        left_to_run.remove(config)
        finished = append_result(out, result)  # the row first: a kill from here on loses nothing
        settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "verbose")}
        write_hparams(config.paths.tensorboard(), config.name, settings, result)
        shutil.rmtree(config.paths.backup_root, ignore_errors=True)
        left = sum(_estimate(c, finished) for c in left_to_run) / getattr(executor, "parallel_runs", 1)
        echo(
            f"[{len(configs) - len(pending) + index + 1}/{len(configs)} | elapsed {_clock(time.time() - started)}"
            f" | ~{_clock(left)} left] {config.strategy} {config.network} N={samples_label(config.samples_per_class)}"
            f" seed {config.seed}: test {100 * (result['test_accuracy'] or 0):.1f} %, best epoch"
            f" {result['best_epoch']}/{result['epochs_run']}, {result['wall_seconds']:.0f} s"
            + (f"; DIVERGED in epoch {result['diverged_epoch']}" if result.get("diverged_epoch") else "")
        )
    results = read_results(out)
    return results[results["key"].isin(wanted)].reset_index(drop=True)


def _remove_unpicked_models(results: pd.DataFrame, out: str) -> None:
    """Delete the kept models of these runs except the one validation picks per strategy and N."""
    picked = set(picked_runs(results)["run"])
    for name in set(results["run"]) - picked:
        path = GridPaths(out).run(name).model
        if os.path.exists(path):
            os.remove(path)


def compare(
    preset: str | None = None,
    *,
    out: str,
    strategy_names=None,
    samples_per_class=None,
    seeds=None,
    quiet: bool = False,
    baseline: str | None = None,
    keep_models: str = "best",
    echo=print,
    executor=None,
    seed_design: sequential.Design | None = None,
    **fields,
) -> tuple[pd.DataFrame, str]:
    """The whole comparison: a preset with overrides, run resumably, then summary and plots.

    A preset in parts (`quick`: the classic strategies on an ImageNet backbone, and the feature-matching methods)
    runs each part as its own grid in `<out>/<part>/` (its results, summary and plots), then writes
    `<out>/summary.md` with every part's summary.

    Args:
        preset: "quick", "course", "thesis" (see `PRESETS`) or None for the `RunConfig` defaults with every
            classic strategy.
        out: the output folder.
        strategy_names: overrides the preset's strategies (in a preset in parts, each part runs those of its family,
            and scratch).
        samples_per_class: overrides its N values (None / "all" for the full training set).
        seeds: overrides its seeds (a list, or a number of seeds).
        quiet: one line per run instead of Keras progress bars.
        baseline: the Mann-Whitney baseline (default: each strategy against the previous one).
        keep_models: "best" (the model validation picks per strategy and N), "all", or "none" (under
            `<out>/models/`, see `inference`).
        echo: where progress and the summary go.
        executor: where runs execute (see `run_grid`); default one after another in this process.
        seed_design: seeds until the ranking is settled (`sequential.Design`): seeds run in rounds, each round
            only for the methods with an unsettled pair; `seeds` is then ignored.
        **fields: `RunConfig` fields that override the preset's.

    Returns:
        (the results of the grid, the summary's markdown).

    """
    if keep_models not in KEEP_MODELS:
        raise ValueError(f"Unknown keep_models {keep_models!r}; choose one of {', '.join(KEEP_MODELS)}.")
    settings = presets.get_config(preset)
    options = {
        "quiet": quiet,
        "baseline": baseline,
        "keep_models": keep_models,
        "echo": echo,
        "course": preset == "course",
        "executor": executor,
        "seed_design": seed_design,
    }
    overrides = {"strategy_names": strategy_names, "samples_per_class": samples_per_class, "seeds": seeds, **fields}
    if "parts" not in settings:
        return _compare(settings, out, overrides, options)
    check_output_folder(out)
    with lock(out):
        tables, texts = [], [f"# {preset}\n"]
        for part, part_settings in settings["parts"].items():
            chosen = part_settings["strategies"]
            if strategy_names:  # the given ones of this part's family (scratch: in every part)
                chosen = [
                    name for name in strategy_names if name == "scratch" or _family(name) == part_settings["family"]
                ]
            if not chosen:
                continue
            description = _description(part_settings, chosen, fields)
            echo(f"{preset} / {part}: {description}")
            results, text = _compare(
                part_settings, os.path.join(out, part), {**overrides, "strategy_names": chosen}, options
            )
            tables.append(results.assign(part=part))
            texts.append(f"\n# {part}: {description}\n\n" + _relinked(text, part))
        if not tables:
            raise ValueError(f"None of {strategy_names} is in the {preset} preset.")
        text = "".join(texts)
        with open(GridPaths(out).summary, "w") as file:
            file.write(text)
    return pd.concat(tables, ignore_index=True), text


_DESCRIBED = ("backbone", "weights", "source", "source_weights", "target", "image_size", "augment", "epochs")


def _description(settings: dict, chosen: list[str], fields: dict) -> str:
    """A preset part's header: its own description, or what actually runs where the user's options change it."""
    changed = {key: fields[key] for key in _DESCRIBED if key in fields and fields[key] != settings.get(key)}
    if not changed and chosen == settings["strategies"]:
        return settings["description"]
    merged = {key: settings.get(key) for key in _DESCRIBED} | changed
    shown = ", ".join(f"{key} {value}" for key, value in merged.items() if value is not None)
    return f"{', '.join(chosen)} ({shown}; the preset's settings with your options)"


def _family(name: str) -> str:
    return strategies.spec(name).family


def _relinked(text: str, folder: str) -> str:
    """Markdown of a part's summary with its relative links made relative to the folder above."""
    return re.sub(r"\]\((?!https?:|/)", f"]({folder}/", text)


def _compare(settings: dict, out: str, overrides: dict, options: dict) -> tuple[pd.DataFrame, str]:
    settings = {key: value for key, value in settings.items() if key != "description"}
    preset_strategies = settings.pop("strategies")
    chosen = overrides.pop("strategy_names") or preset_strategies
    preset_samples = settings.pop("samples_per_class", [None])
    preset_seeds = settings.pop("seeds", [0])
    samples = overrides.pop("samples_per_class") or preset_samples
    seeds = overrides.pop("seeds")
    seeds = seeds if seeds is not None else preset_seeds
    settings["per_strategy"] = presets.own_settings(settings.pop("per_strategy", {}), overrides)
    settings.update(overrides, keep_model=options["keep_models"] != "none")
    if options["seed_design"] is not None:
        seeds = options["seed_design"].max_seeds
    configs = expand(chosen, samples, seeds, **settings)
    check_output_folder(out)
    with lock(out):  # one writer from the first run to the last plot
        if options["seed_design"] is None:
            results, settlement = _run(configs, out, options), None
        else:
            results, settlement = _run_rounds(configs, chosen, out, options)
        if options["keep_models"] == "best":
            _remove_unpicked_models(results, out)
        text = report(
            results, out, order=chosen, baseline=options["baseline"], course=options["course"], settlement=settlement
        )
    options["echo"](text)
    return results, text


def _run(configs: list[RunConfig], out: str, options: dict) -> pd.DataFrame:
    return run_grid(configs, out, quiet=options["quiet"], echo=options["echo"], executor=options["executor"])


def _run_rounds(configs: list[RunConfig], chosen, out: str, options: dict):
    """Seeds in rounds (`sequential.settle`): each round adds seeds only to the methods of an unsettled pair.

    Resumable: every round runs through `run_grid`, which skips finished runs, and the looks are replayed from
    results.csv, so a second call takes the same decisions and goes on where the first stopped.
    """
    design, echo = options["seed_design"], options["echo"]
    label = {config.key: str(samples_label(config.samples_per_class)) for config in configs}
    needed = {(config.strategy, label[config.key]): design.min_seeds for config in configs}
    while True:
        chosen_runs = [c for c in configs if c.seed < needed[(c.strategy, label[c.key])]]
        results = _run(chosen_runs, out, options)
        labelled = results.assign(samples_per_class=results["samples_per_class"].astype(str))
        settlement = sequential.settle(labelled, chosen, design)
        grown = {key: max(seeds, settlement.needed.get(key, 0)) for key, seeds in needed.items()}
        if grown == needed:
            return results, settlement
        more = [f"{key[0]} N={key[1]}: {seeds}" for key, seeds in grown.items() if seeds > needed[key]]
        echo("seeds auto: unsettled pairs, seeds a side next: " + ", ".join(more))
        needed = grown
