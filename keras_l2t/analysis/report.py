"""The report of a comparison: `<out>/summary.md` (tables and tests from `stats`) and its plots."""

from __future__ import annotations

import json
import os

import pandas as pd

from keras_l2t.analysis import accuracy_plots, intervals, stats
from keras_l2t.core.paths import GridPaths
from keras_l2t.training import meta_health, strategies

__all__ = [
    "best_run", "minority_accuracy", "minority_tests", "per_class_means", "per_class_table", "picked_runs",
    "plot_confusion", "plot_per_class", "report", "still_climbing",
]  # fmt: skip

CLIMB_MARGIN = 0.01  # a validation accuracy this much above the best of the earlier epochs is still climbing


def picked_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The run validation picks for each strategy and N (highest validation accuracy; first on a tie)."""
    if not len(results):
        return results
    ranked = results.assign(_score=results["validation_accuracy"].astype(float).fillna(-1.0))
    best = ranked.groupby(["strategy", "samples_per_class"], sort=False)["_score"].idxmax()
    return results.loc[best.to_numpy()]


def report(
    results: pd.DataFrame, out: str, *, order=None, baseline: str | None = None, course: bool = False, settlement=None
) -> str:
    """Write `<out>/summary.md`, `<out>/accuracy_vs_samples.png`, `<out>/learning_curves.png`, `<out>/intervals.png`.

    Args:
        results: from `grid.run_grid`.
        out: the output folder.
        order: strategies in order (the Mann-Whitney baseline of each is the previous one by default).
        baseline: compare every strategy with this one instead.
        course: lead the summary with the course-style table.
        settlement: a `--seeds auto` grid's `sequential.Settlement`, reported with how each pair settled.

    Returns:
        The summary's markdown text.

    """
    paths = GridPaths(out)
    diverged = results[results["diverged_epoch"].notna()] if "diverged_epoch" in results else results.iloc[:0]
    results = results.drop(diverged.index)
    text = stats.summary(results, order, baseline, course=course)
    if len(diverged):
        text += (
            "\n## Diverged runs (left out of every table, test and plot above)\n\n"
            + "\n".join(
                f"- {row.run}: loss NaN or infinite in epoch {int(row.diverged_epoch)}" for row in diverged.itertuples()
            )
            + "\n"
        )
    text += "\n![test accuracy against samples per class](accuracy_vs_samples.png)\n"
    text += "\n![learning curves with early-stop points](learning_curves.png)\n"
    text += _intervals_section(results, paths, order, baseline, settlement)
    text += _convergence_section(results, paths, order)
    text += _per_class_section(results, paths, order, baseline)
    text += _meta_drift_section(results, paths)
    text += _models_section(results, paths)
    text += _confusion_section(results, paths)
    with open(paths.summary, "w") as file:
        file.write(text)
    if len(results):
        accuracy_plots.plot_accuracy_vs_samples(results, paths.accuracy_plot, order)
        accuracy_plots.plot_learning_curves(results, paths.history, paths.learning_curves_plot, order)
    return text


def per_class_means(results: pd.DataFrame, order=None) -> pd.DataFrame:
    """Mean test accuracy of each class per strategy and N, the last (minority) class first.

    Args:
        results: one row per run; rows without `per_class_accuracy` are left out.
        order: strategies to keep, in this order (default: all, in order of appearance).

    Returns:
        One row per (strategy, samples_per_class) with a `runs` column, then one column per class (shares).

    """
    rows = results[results["per_class_accuracy"].notna()] if "per_class_accuracy" in results else results.iloc[:0]
    if not len(rows):
        return pd.DataFrame()
    parsed = [json.loads(text) for text in rows["per_class_accuracy"]]
    names = list(parsed[0])
    names = names[-1:] + names[:-1]  # the imbalanced protocol shrinks the last class
    table = pd.DataFrame(parsed, index=rows.index)[names]
    table["strategy"], table["samples_per_class"] = rows["strategy"], rows["samples_per_class"]
    grouped = table.groupby(["strategy", "samples_per_class"], sort=False)
    means = grouped[names].mean()
    means.insert(0, "runs", grouped.size())
    if order:
        kept = [key for name in order for key in means.index if key[0] == name]
        means = means.loc[kept]
    return means


def minority_accuracy(results: pd.DataFrame) -> pd.Series:
    """Each run's test accuracy on the last class (the one the imbalanced protocol shrinks), NaN without it."""
    if "per_class_accuracy" not in results:
        return pd.Series(float("nan"), index=results.index)
    return results["per_class_accuracy"].map(lambda text: list(json.loads(text).values())[-1], na_action="ignore")


def minority_tests(results: pd.DataFrame, order=None, baseline: str | None = None) -> str:
    """Markdown: Mann-Whitney tests of the minority class's test accuracy (see `stats.mann_whitney`).

    Args:
        results: one row per run; runs without `per_class_accuracy` are left out.
        order: strategies in order.
        baseline: compare every strategy with this one; None compares each with the previous.

    Returns:
        The titled table of tests; empty when there is nothing to compare (a single strategy).

    """
    with_minority = results.assign(minority_accuracy=minority_accuracy(results).astype(float))
    tests = stats.mann_whitney(with_minority, order, baseline, metric="minority_accuracy")
    return stats.p_value_table(tests, "the minority class's test accuracy") if len(tests) else ""


def per_class_table(results: pd.DataFrame, order=None) -> str:
    """Markdown: mean test accuracy of each class per strategy and N, the last (minority) class first."""
    means = per_class_means(results, order)
    if not len(means):
        return ""
    names = list(means.columns[1:])
    lines = ["| method | N | runs | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for (method, samples), row in means.iterrows():
        values = " | ".join(stats._percent(row[name]) for name in names)
        lines.append(f"| {method} | {samples} | {int(row['runs'])} | {values} |")
    return "\n".join(lines)


def plot_per_class(results: pd.DataFrame, path: str, order=None):
    """Grouped bars of test accuracy per class (the minority class first, shaded), a bar per strategy and N.

    Args:
        results: one row per run, with `per_class_accuracy`.
        path: the PNG to write.
        order: strategies in order.

    Returns:
        The matplotlib figure, or None when no run has per-class accuracy.

    """
    import numpy as np
    from matplotlib.figure import Figure

    means = per_class_means(results, order)
    if not len(means):
        return None
    names = list(means.columns[1:])
    width = 0.8 / len(means)
    figure = Figure(figsize=(2.5 + 0.7 * len(names), 4), layout="constrained")
    axis = figure.subplots()
    axis.axvspan(-0.5, 0.5, color="0.92", zorder=0)  # the minority class
    for index, ((method, samples), row) in enumerate(means.iterrows()):
        positions = np.arange(len(names)) - 0.4 + width * (index + 0.5)
        label = f"{method}, N = {samples} ({int(row['runs'])} run{'s' if row['runs'] > 1 else ''})"
        axis.bar(positions, 100 * row[names].to_numpy(float), width, label=label)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set(ylabel="test accuracy (%)", ylim=(0, 100), xlim=(-0.5, len(names) - 0.5))
    axis.set_title("test accuracy per class (minority class first, shaded)", fontsize=9)
    axis.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return figure


def still_climbing(history_file: str, tail: float = 0.25, margin: float = CLIMB_MARGIN) -> bool | None:
    """Whether a run's validation accuracy was still climbing when its budget ended.

    True when the best validated accuracy of the last `tail` of its epochs beats the best before them by more
    than `margin` (a run stopped by patience has, by definition, stopped climbing). None without a history.
    """
    if not os.path.exists(history_file):
        return None
    accuracy = pd.read_csv(history_file).get("val_accuracy")
    if accuracy is None or accuracy.notna().sum() < 2:
        return None
    cut = int(len(accuracy) * (1 - tail))
    early, late = accuracy.iloc[: max(cut, 1)].max(), accuracy.iloc[max(cut, 1) :].max()
    return bool(late > early + margin)


def _convergence_section(results: pd.DataFrame, paths: GridPaths, order) -> str:
    rows = []
    for (method, samples), group in results.groupby(["strategy", "samples_per_class"], sort=False):
        if order and method not in order:
            continue
        climbing = [still_climbing(paths.run(run).history()) for run in group["run"]]
        known = [flag for flag in climbing if flag is not None]
        best = group["best_epoch"].astype(float).median()
        epochs = group["epochs_run"].astype(float).median()
        rows.append(f"| {method} | {samples} | {sum(known)} of {len(known)} | {best:.0f} of {epochs:.0f} |")
    if not rows:
        return ""
    header = (
        "\n## Did the runs stop climbing?\n\nA run is still climbing when the best validation accuracy of its last "
        f"quarter of epochs beats the best before by more than {100 * CLIMB_MARGIN:.0f} point: its budget was too "
        "short to read a converged result.\n\n| method | N | still climbing | median best epoch |\n|---|---|---|---|\n"
    )
    return header + "\n".join(rows) + "\n"


def _per_class_section(results: pd.DataFrame, paths: GridPaths, order, baseline: str | None) -> str:
    imbalanced = results[results["imbalanced"].astype(bool)] if "imbalanced" in results else results.iloc[:0]
    table = per_class_table(imbalanced, order)
    if not table:
        return ""
    plot_per_class(imbalanced, paths.per_class_plot, order)
    title = "\n## Test accuracy per class (imbalanced runs; the minority class first, %)\n\n"
    tests = minority_tests(imbalanced, order, baseline)
    tests = tests and tests + "\n\n"
    return title + table + "\n\n" + tests + "![test accuracy per class](per_class_accuracy.png)\n"


def _confusion_section(results: pd.DataFrame, paths: GridPaths) -> str:
    best = best_run(results, keep=lambda run: os.path.exists(paths.run(run).confusion))
    if best is None:
        return ""
    source = paths.run(best["run"]).confusion
    with open(source) as file:
        matrix = json.load(file)
    title = f"{best['strategy']}, N = {best['samples_per_class']}, seed {best['seed']}"
    plot_confusion(matrix["confusion"], matrix["class_names"], paths.confusion_plot, title=title)
    return f"\n![test confusion matrix of {best['run']}](confusion_matrix.png)\n"


def plot_confusion(confusion, class_names, path: str, title: str = ""):
    """A confusion matrix PNG: rows are true classes, columns predictions, each row as shares of its class."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.5 * len(class_names)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axis.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=7, color=colour)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true class", title=f"test confusion (row shares)\n{title}"[:120])
    axis.title.set_fontsize(8)
    figure.colorbar(image, ax=axis, shrink=0.8)
    figure.savefig(path, dpi=110)
    return figure


def best_run(results: pd.DataFrame, keep=lambda run: True):
    """The run validation picks overall: the highest validation accuracy (first on a tie) among `picked_runs`.

    Only runs whose name `keep` accepts count (e.g. those whose model was kept); None when none is left.
    """
    picked = picked_runs(results)
    picked = picked.loc[[bool(keep(run)) for run in picked["run"]]] if len(picked) else picked
    if not len(picked):
        return None
    return picked.loc[picked["validation_accuracy"].astype(float).fillna(-1.0).idxmax()]


def _models_section(results: pd.DataFrame, paths: GridPaths) -> str:
    rows = [row for row in picked_runs(results).itertuples() if os.path.exists(paths.run(row.run).model)]
    if not rows:
        return ""
    lines = ["", "## Models kept", "", "The run validation picks per strategy and N; classify new images with",
             f"`python apps/predict.py --model {paths.out} <images>` (it takes the best of these).", "",
             "| strategy | N | validation | test | model |", "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        model = os.path.relpath(paths.run(row.run).model, paths.out)
        lines.append(
            f"| {row.strategy} | {row.samples_per_class} | {stats._percent(row.validation_accuracy)} | "
            f"{stats._percent(row.test_accuracy)} | `{model}` |"
        )
    return "\n".join(lines) + "\n"


def _intervals_section(results: pd.DataFrame, paths: GridPaths, order, baseline, settlement) -> str:
    effects = intervals.effect_table(results, order, baseline)
    if not effects:
        return ""
    text = "\n## Effect sizes beside the tests\n\n" + effects + "\n"
    if settlement is not None:
        text += "\n" + intervals.settlement_table(results, settlement) + "\n"
    intervals.plot_intervals(results, os.path.join(paths.out, "intervals.png"), order)
    return text + "\n![mean test accuracy with 95 % bootstrap intervals](intervals.png)\n"


def _meta_drift_section(results: pd.DataFrame, paths: GridPaths) -> str:
    meta = [name for name in strategies.names() if strategies.spec(name).meta]
    meta_runs = results.loc[results["strategy"].isin(meta), "run"]
    drift = stats.meta_weight_drift(paths.tensorboard, meta_runs) if len(meta_runs) else pd.DataFrame()
    health = meta_health.health_table(results)  # the health check's figures (issue 37), from the results rows
    if drift.empty and not health:
        return ""
    text = "\n## How far the meta-networks moved\n\n"
    if not drift.empty:
        text += (
            "Where weights (lambda, mean over pairs) after the first and the last epoch, and the largest drop of a "
            "pair's what entropy below log C (the uniform start).\n\n" + stats.meta_drift_table(drift) + "\n\n"
        )
    if health:
        text += (
            "The health check (`meta_health.MetaHealth`, on 8 validation images, from the start of `fit`): bound = "
            "meta rate x meta steps, about the most Adam can move a meta weight; below 0.05 the run could not "
            "learn its pair weights.\n\n" + health + "\n"
        )
    return text
