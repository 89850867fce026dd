"""What tuning chose and what it changed: figures and tables of the studies, and the tuned comparison.

`compare_tuned` tunes each strategy of a comparison on validation (`keras_l2t.running.tuning`), runs the comparison
untuned into `<out>/untuned/` and with each strategy's best settings into `<out>/tuned/` (the evaluation seeds,
as `grid.compare` runs them), and writes `<out>/tuning_summary.md`: the budget, the chosen settings, Optuna's
optimisation history and parameter importances per strategy, and the tuned row beside the untuned one.

>>> from keras_l2t import tuning_report
>>> tuning_report.compare_tuned("quick", "runs/quick_tuned", ["scratch", "fm_uniform", "l2t_ww"], trials=8)
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from keras_l2t.running import grid, presets, tuning  # noqa: E402
from keras_l2t.training import strategies  # noqa: E402

__all__ = ["compare_tuned", "plot_study", "settings_table", "tuned_against_untuned"]

MIN_TRIALS_FOR_IMPORTANCE = 4  # complete trials below which PED-ANOVA importances are not drawn


def plot_study(study, path: str) -> str:
    """Draw a study's optimisation history and its parameter importances side by side.

    Importances are Optuna's PED-ANOVA (`optuna.importance.PedAnovaImportanceEvaluator`, no scikit-learn needed);
    with fewer than `MIN_TRIALS_FOR_IMPORTANCE` complete trials or a single parameter, the panel says so instead.

    Args:
        study: an `optuna.Study`.
        path: the PNG written.

    Returns:
        A note on the importances ("" when drawn).

    """
    complete = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    figure, (history, importance) = plt.subplots(1, 2, figsize=(11, 4))
    numbers = [trial.number for trial in complete]
    values = [trial.value for trial in complete]
    history.plot(numbers, values, "o", label="trial")
    history.plot(numbers, pd.Series(values, dtype=float).cummax(), "-", label="best so far")
    history.set(xlabel="trial", ylabel="validation accuracy", title=f"{study.study_name}: optimisation history")
    history.legend()
    note = _draw_importances(study, complete, importance)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return note


def _draw_importances(study, complete: list, axes) -> str:
    import optuna

    names = sorted({name for trial in complete for name in trial.params})
    note = ""
    if len(names) < 2 or len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        note = f"importances need 2 parameters and {MIN_TRIALS_FOR_IMPORTANCE} complete trials ({len(complete)} here)"
    else:
        try:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
            axes.barh(list(importances)[::-1], list(importances.values())[::-1])
        except (ValueError, RuntimeError) as error:
            note = f"importances not computed: {error}"
    axes.set(title=f"{study.study_name}: parameter importances (PED-ANOVA)", xlabel="importance")
    if note:
        axes.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=axes.transAxes)
    return note


def settings_table(studies: dict) -> str:
    """A markdown table of each strategy's chosen settings, its validation accuracy and its trials.

    Args:
        studies: strategy name -> `optuna.Study`.

    Returns:
        The table.

    """
    names = sorted({name for study in studies.values() for trial in study.trials for name in trial.params})
    lines = ["| strategy | " + " | ".join(names) + " | validation | trials (complete / pruned / failed) |"]
    lines.append("|---" * (len(names) + 3) + "|")
    for strategy, study in studies.items():
        counts = [sum(trial.state.name == state for trial in study.trials) for state in ("COMPLETE", "PRUNED", "FAIL")]
        best = tuning.best_settings(study)
        cells = [f"{best[name]:.3g}" if name in best else "" for name in names]
        lines.append(f"| {strategy} | {' | '.join(cells)} | {study.best_value:.3f} | {' / '.join(map(str, counts))} |")
    return "\n".join(lines) + "\n"


def tuned_against_untuned(untuned: pd.DataFrame, tuned: pd.DataFrame) -> str:
    """A markdown table: each strategy's test accuracy (mean +- sd over seeds) untuned and tuned, per N.

    Args:
        untuned: results of the untuned comparison (`grid.compare`).
        tuned: results of the tuned one.

    Returns:
        The table.

    """
    rows = []
    for label, results in (("untuned", untuned), ("tuned", tuned)):
        finished = results[results["diverged_epoch"].isna()] if "diverged_epoch" in results else results
        grouped = finished.groupby(["strategy", finished["samples_per_class"].astype(str)])["test_accuracy"]
        for (strategy, samples), accuracy in grouped:
            rows.append((strategy, samples, label, 100 * accuracy.mean(), 100 * accuracy.std(), len(accuracy)))
    table = pd.DataFrame(rows, columns=["strategy", "N", "recipe", "mean", "sd", "seeds"])
    lines = ["| strategy | N | recipe | test accuracy % (mean +- sd) | seeds |", "|---|---|---|---|---|"]
    for row in table.sort_values(["strategy", "N", "recipe"], ascending=[True, True, False]).itertuples():
        spread = f"{row.sd:.1f}" if row.seeds > 1 else "-"  # one seed: no spread
        lines.append(f"| {row.strategy} | {row.N} | {row.recipe} | {row.mean:.1f} +- {spread} | {row.seeds} |")
    return "\n".join(lines) + "\n"


def _parts(preset: str | None, strategy_names, fields: dict) -> dict:
    """Preset part name -> (its settings with the user's fields, its chosen strategies); one part "" without parts."""
    settings = presets.get_config(preset)
    parts = settings["parts"] if "parts" in settings else {"": settings}
    chosen = {}
    for part, part_settings in parts.items():
        names = part_settings["strategies"]
        if strategy_names:  # as grid.compare: the given ones of this part's family, scratch in every part
            family = part_settings.get("family")
            names = [n for n in strategy_names if n == "scratch" or strategies.spec(n).family == family or not family]
        if names:  # the user's fields apply to every strategy: they replace the preset's own settings of one
            own = presets.own_settings(part_settings.get("per_strategy", {}), dict(fields))
            chosen[part] = ({**part_settings, **fields, "per_strategy": own}, names)
    if not chosen:
        raise ValueError(f"None of {strategy_names} is in the {preset} preset.")
    return chosen


def compare_tuned(
    preset: str | None,
    out: str,
    strategy_names=None,
    trials: int = 8,
    executor=None,
    *,
    space=None,
    seed: int = 0,
    echo=print,
    **fields,
) -> str:
    """Tune every strategy with the same budget, then compare untuned and tuned on the evaluation seeds.

    Args:
        preset: a preset (each part tuned and compared on its own) or None (the `RunConfig` defaults).
        out: the output folder: `tuning/` (the studies), `untuned/`, `tuned/`, `tuning_summary.md`.
        strategy_names: the strategies (default the preset's).
        trials: trials per strategy (each of the runs' epochs: the same budget for all).
        executor: where runs execute (`executors.make`).
        space: search space overrides for every strategy (`tuning_space.parse_space`).
        seed: the tuning's seed (trials use `tuning.TUNING_SEED_OFFSET + seed`).
        echo: where progress goes.
        **fields: `RunConfig` fields overriding the preset's (as in `grid.compare`).

    Returns:
        The summary's markdown.

    """
    grid.check_output_folder(out)
    sections = [f"# Tuned against untuned ({preset or 'run defaults'})\n"]
    for part, (settings, names) in _parts(preset, strategy_names, fields).items():
        where = part or "."
        studies = tuning.tune_grid(
            settings, names, trials, os.path.join(out, "tuning", where), executor, space, seed, echo
        )
        own = settings.get("per_strategy", {})  # e.g. a zero head: kept under the tuned parameters
        best = {name: {**own.get(name, {}), **tuning.best_settings(study)} for name, study in studies.items()}
        options = {key: settings[key] for key in ("samples_per_class", "seeds") if key in settings}
        dropped = ("strategies", "description", "per_strategy", *options)  # untuned: the reference recipe
        run = {key: value for key, value in settings.items() if key not in dropped}
        common = dict(strategy_names=names, executor=executor, echo=echo, quiet=True, **options, **run)
        untuned, _ = grid.compare(None, out=os.path.join(out, "untuned", where), **common)
        tuned, _ = grid.compare(None, out=os.path.join(out, "tuned", where), per_strategy=best, **common)
        sections.append(_section(part, studies, untuned, tuned, out, trials, settings))
    text = "\n".join(sections)
    with open(os.path.join(out, "tuning_summary.md"), "w") as file:
        file.write(text)
    echo(text)
    return text


def _section(part: str, studies: dict, untuned, tuned, out: str, trials: int, settings: dict) -> str:
    epochs = {name: study.user_attrs.get("budget", {}).get("epochs") for name, study in studies.items()}
    budget = ", ".join(f"{name} {trials} x {epochs[name]} epochs" for name in studies)
    text = f"## {part or 'comparison'}\n\nBudget per strategy (trials x epochs, pruned trials stop earlier): {budget}."
    text += (
        f" Trials train on seed {tuning.TUNING_SEED_OFFSET}+ (their own subset and validation split, read without "
        f"the test split); the comparison runs seeds {settings.get('seeds', [0])}.\n\n"
    )
    text += "### Chosen settings\n\n" + settings_table(studies) + "\n"
    for name, study in studies.items():
        figure = os.path.join("tuning", part, f"{name}.png")
        note = plot_study(study, os.path.join(out, figure))
        text += f"![{name}: optimisation history and importances]({figure})" + (f" ({note})" if note else "") + "\n"
    return text + "\n### Test accuracy, untuned and tuned\n\n" + tuned_against_untuned(untuned, tuned)
