"""What the L2T meta-networks learned: each pair's lambda and what entropy over epochs, and the weights they pick.

Both figures read what a run records on its probe batch (issue 37): `MetaWeightsLogger`'s TensorBoard scalars
(`<run>/meta`: `where/pair_*`, `what_entropy/pair_*`) and `MetaHealth`'s `meta_weights.npz` (each pair's mean
lambda and mean what weights at the start and the end of `fit`).
"""

from __future__ import annotations

import os

import numpy as np

from keras_l2t.analysis.accuracy_plots import _figure
from keras_l2t.training.callbacks import read_scalars

__all__ = ["plot_meta_trajectories", "plot_meta_weights"]


def _pair_series(scalars: dict, prefix: str) -> dict[int, tuple[str, np.ndarray, np.ndarray]]:
    """Pair index -> (label "s<m>->t<n>", epochs, values) for the scalars `<prefix>pair_<k>_s<m>_t<n>`."""
    series = {}
    for tag in (tag for tag in scalars if tag.startswith(prefix)):
        _, index, source, target = tag[len(prefix) :].split("_")
        steps, values = zip(*scalars[tag], strict=True)
        series[int(index)] = (f"{source}->{target}", np.asarray(steps) + 1, np.asarray(values))
    return dict(sorted(series.items()))


def plot_meta_trajectories(runs: dict[str, str], path: str, channels: list[int] | None = None):
    """Each run's pairs over epochs: mean lambda (left) and what entropy as a fraction of log C (right).

    Args:
        runs: label -> a run's TensorBoard folder (`<out>/tb/<run>`; its `meta` events are read).
        path: the PNG to write.
        channels: each pair's number of source channels C, by pair index (`meta_weights.npz` has them: the
            length of `start_what_pair<k>`); without them the entropy is drawn in nats.

    Returns:
        The matplotlib Figure (saved to `path`).

    Raises:
        FileNotFoundError: a run without meta-network scalars (not an L2T run, or not trained yet).

    """
    figure = _figure(figsize=(10, 2.6 * len(runs)))
    axes = np.atleast_2d(figure.subplots(len(runs), 2, squeeze=False))
    for row, (label, folder) in enumerate(runs.items()):
        scalars = read_scalars(os.path.join(folder, "meta"))
        where, entropy = _pair_series(scalars, "where/"), _pair_series(scalars, "what_entropy/")
        if not where:
            raise FileNotFoundError(f"No meta-network scalars under {folder}/meta: is it an L2T run's folder?")
        for index, (pair, epochs, values) in where.items():
            axes[row, 0].plot(epochs, values, label=f"{index}: {pair}")
        for index, (_, epochs, values) in entropy.items():
            axes[row, 1].plot(epochs, values / np.log(channels[index]) if channels else values)
        axes[row, 0].set_ylabel(f"{label}\nmean lambda")
        axes[row, 1].set_ylabel("what entropy / log C" if channels else "what entropy (nats)")
        axes[row, 0].legend(fontsize=6, ncol=2)
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def plot_meta_weights(files: dict[str, str], path: str, channels_shown: int = 16):
    """Which pairs and channels the meta-networks pick: lambdas, and each pair's largest what weights.

    Left: each pair's mean lambda at the start and the end. Right: each pair's largest what weights at the end,
    as multiples of the uniform 1/C (sorted; 1 is uniform).

    Args:
        files: label -> a `meta_weights.npz` (`MetaHealth`).
        path: the PNG to write.
        channels_shown: how many of each pair's largest what weights to draw.

    Returns:
        The matplotlib Figure (saved to `path`).

    """
    figure = _figure(figsize=(10, 2.6 * len(files)))
    axes = np.atleast_2d(figure.subplots(len(files), 2, squeeze=False))
    for row, (label, file) in enumerate(files.items()):
        saved = np.load(file)
        pairs = [f"{source}->{target}" for source, target in saved["pairs"]]
        positions = np.arange(len(pairs))
        axes[row, 0].bar(positions - 0.2, saved["start_where"], 0.4, label="start")
        axes[row, 0].bar(positions + 0.2, saved["end_where"], 0.4, label="end")
        axes[row, 0].set_xticks(positions, pairs, fontsize=6, rotation=60)
        axes[row, 0].set_ylabel(f"{label}\nmean lambda")
        axes[row, 0].legend(fontsize=7)
        for index, pair in enumerate(pairs):
            what = saved[f"end_what_pair{index}"]
            ratios = np.sort(what * what.size)[::-1][:channels_shown]
            axes[row, 1].plot(np.arange(1, ratios.size + 1), ratios, marker=".", label=pair)
        axes[row, 1].axhline(1.0, color="grey", linewidth=0.8)
        axes[row, 1].set_yscale("log")
        axes[row, 1].set_ylabel("what weight x C (largest first)")
        axes[row, 1].legend(fontsize=6, ncol=3)
    axes[-1, 1].set_xlabel("channel rank")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure
