"""The comparison's plots: test accuracy against samples per class, and the learning curves of every run."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def _figure(**options):
    """A matplotlib Figure drawn without pyplot: no backend to choose, no global state, no window."""
    from matplotlib.figure import Figure

    return Figure(**options)


def plot_accuracy_vs_samples(results: pd.DataFrame, path: str, order=None):
    """The thesis figure: test accuracy against samples per class, mean +- std per method, each run a dot.

    Args:
        results: one row per run.
        path: the PNG to write.
        order: the methods in order.

    Returns:
        The matplotlib Figure (saved to `path`).

    """
    from keras_l2t.analysis.stats import _order, _sample_sizes  # here: stats re-exports this module's plots

    figure = _figure(figsize=(6.5, 4.2))
    axis = figure.subplots()
    sizes = _sample_sizes(results)
    positions = {size: index for index, size in enumerate(sizes)}
    for offset, method in enumerate(_order(results, order)):
        rows = results[results["strategy"] == method]
        grouped = rows.groupby("samples_per_class", sort=False)["test_accuracy"]
        means, spreads = grouped.mean(), grouped.std(ddof=1).fillna(0)
        shift = 0.03 * (offset - 1.5)
        x = np.array([positions[size] for size in means.index]) + shift
        line = axis.errorbar(
            x, 100 * means.to_numpy(), yerr=100 * spreads.to_numpy(), marker="o", capsize=3, label=method
        )
        runs_x = rows["samples_per_class"].map(positions).to_numpy() + shift + 0.008
        axis.scatter(runs_x, 100 * rows["test_accuracy"], s=10, alpha=0.5, color=line.lines[0].get_color())
    axis.set_xticks(range(len(sizes)), [str(size) for size in sizes])
    title = "Test accuracy (mean ± std; dots: single runs)"
    axis.set(xlabel="training images per class", ylabel="test accuracy (%)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def plot_learning_curves(results: pd.DataFrame, history_dir: str, path: str, order=None):
    """Accuracy and loss per epoch (train dashed, validation solid) of every run, early-stop points marked.

    Args:
        results: one row per run (its `run` names the history file `<history_dir>/<run>.csv`).
        history_dir: the folder of per-epoch CSV histories.
        path: the PNG to write.
        order: the strategies, one column of panels each.

    Returns:
        The matplotlib Figure (saved to `path`).

    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    from keras_l2t.analysis.stats import _order, _sample_sizes

    methods = _order(results, order)
    figure = _figure(figsize=(3.6 * len(methods), 6))
    axes = figure.subplots(2, len(methods), squeeze=False, sharey="row")
    sizes = _sample_sizes(results)
    colours = {size: colormaps["viridis"](i / max(1, len(sizes) - 1)) for i, size in enumerate(sizes)}
    for column, method in enumerate(methods):
        for row in results[results["strategy"] == method].itertuples():
            file = os.path.join(history_dir, f"{row.run}.csv")
            if not os.path.exists(file):
                continue
            history = pd.read_csv(file)
            epochs = history["epoch"].to_numpy() + 1
            colour = colours[row.samples_per_class]
            for panel, metric in enumerate(("accuracy", "loss")):
                axis = axes[panel][column]
                axis.plot(epochs, history[metric], "--", color=colour, alpha=0.5, linewidth=0.8)
                if f"val_{metric}" in history:
                    validated = history[f"val_{metric}"].notna().to_numpy()  # validate_every > 1 leaves gaps
                    values = history[f"val_{metric}"].to_numpy()
                    axis.plot(epochs[validated], values[validated], color=colour, alpha=0.8, linewidth=1)
                    best = int(row.best_epoch) - 1
                    if 0 <= best < len(history):
                        axis.plot(best + 1, history[f"val_{metric}"].iloc[best], "*", color="crimson", markersize=9)
        axes[0][column].set_title(method)
        axes[1][column].set_xlabel("epoch")
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("loss (log scale)")
    for axis in axes[1]:
        axis.set_yscale("log")  # early validation losses of barely trained BatchNorm statistics can be huge
    handles = [Line2D([], [], color=colour, label=f"N = {size}") for size, colour in colours.items()]
    handles += [
        Line2D([], [], color="grey", linestyle="--", label="train"),
        Line2D([], [], color="grey", label="validation"),
        Line2D([], [], color="crimson", marker="*", linestyle="", label="early-stop point"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    return figure
