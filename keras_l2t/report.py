"""The report of a comparison: `<out>/summary.md` (tables and tests from `stats`) and its plots."""

from __future__ import annotations

import pandas as pd

from keras_l2t import stats, strategies
from keras_l2t.paths import GridPaths

__all__ = ["report"]


def report(results: pd.DataFrame, out: str, *, order=None, baseline: str | None = None, course: bool = False) -> str:
    """Write `<out>/summary.md`, `<out>/accuracy_vs_samples.png` and `<out>/learning_curves.png`.

    Args:
        results: from `grid.run_grid`.
        out: the output folder.
        order: strategies in order (the Mann-Whitney baseline of each is the previous one by default).
        baseline: compare every strategy with this one instead.
        course: lead the summary with the course-style table.

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
    text += _meta_drift_section(results, paths)
    with open(paths.summary, "w") as file:
        file.write(text)
    if len(results):
        stats.plot_accuracy_vs_samples(results, paths.accuracy_plot, order)
        stats.plot_learning_curves(results, paths.history, paths.learning_curves_plot, order)
    return text


def _meta_drift_section(results: pd.DataFrame, paths: GridPaths) -> str:
    meta = [name for name in strategies.names() if strategies.spec(name).meta]
    meta_runs = results.loc[results["strategy"].isin(meta), "run"]
    drift = stats.meta_weight_drift(paths.tensorboard, meta_runs) if len(meta_runs) else pd.DataFrame()
    if drift.empty:
        return ""
    return (
        "\n## How far the meta-networks moved\n\nWhere weights (lambda, mean over pairs) after the first and the last "
        "epoch, and the largest drop of a pair's what entropy below log C (the uniform start).\n\n"
        + stats.meta_drift_table(drift)
        + "\n"
    )
