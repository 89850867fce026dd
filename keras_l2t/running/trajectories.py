"""What training does to chosen weights and to the which-pixel maps: records and figures (issue 19).

The L2T-www thesis follows individual target weights over 200 epochs from the same initialisation and seed
(its Figure 36) and shows the which weights gamma converging (its Figure 35). `WeightTrajectory` records chosen
target weights after every epoch in a CSV; `GammaSnapshots` keeps the gamma maps of a few validation images at
chosen epochs in an `.npz`; `plot_weight_trajectories` and `plot_gamma` draw them.
"""

from __future__ import annotations

import csv
import os

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.core import keras_internals

__all__ = [
    "GammaSnapshots",
    "WeightTrajectory",
    "examples_of_distinct_classes",
    "kept_epochs",
    "plot_gamma",
    "plot_weight_trajectories",
    "snapshot_epochs",
]


def trained_network(model: keras.Model) -> keras.Model:
    """The network whose weights a method trains: an `L2TModel`'s target, else the model itself."""
    return getattr(model, "target", model)


def chosen_weights(network: keras.Model, per_layer: int) -> list[tuple[str, keras.Variable, list[int]]]:
    """Every trained kernel of a network (nested models too) with `per_layer` evenly spaced flat indices.

    Args:
        network: the trained network.
        per_layer: how many elements of each kernel to follow.

    Returns:
        (layer name, kernel variable, flat indices) per layer with a kernel, in layer order.

    """
    chosen = []
    for layer in keras_internals.all_layers(network):  # a classic model's backbone is a nested model
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and layer.trainable_weights:
            size = int(np.prod(kernel.shape))
            chosen.append((layer.name, kernel, sorted(set(np.linspace(0, size - 1, per_layer).astype(int).tolist()))))
    return chosen


class WeightTrajectory(keras.callbacks.Callback):
    """Record chosen target weights at the start and after every epoch, as one CSV row per epoch.

    Columns: `epoch` (0 is the initialisation), then `<layer>[<flat index>]` for `per_layer` evenly spaced
    elements of each kernel. Runs that share the architecture, initialisation and seed follow the same elements,
    so `plot_weight_trajectories` can compare methods (the L2T-www thesis, Figure 36).

    Args:
        path: the CSV file.
        per_layer: elements followed per kernel.
        append: keep an existing file's rows (a resumed run), as Keras' `CSVLogger(append=)`; False starts anew.

    """

    def __init__(self, path: str, per_layer: int = 2, append: bool = True):
        super().__init__()
        self.path, self.per_layer, self.append = path, per_layer, append

    def on_train_begin(self, logs=None):
        self.chosen = chosen_weights(trained_network(self.model), self.per_layer)
        if self.append and os.path.exists(self.path):  # a resumed run: its rows so far are kept
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        header = ["epoch"] + [f"{name}[{index}]" for name, _, indices in self.chosen for index in indices]
        self._write(header, "w")
        self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)

    def _record(self, epoch: int) -> None:
        values = [np.ravel(kernel.numpy())[indices] for _, kernel, indices in self.chosen]
        self._write([epoch] + [f"{float(value):.8g}" for value in np.concatenate(values)], "a")

    def _write(self, row: list, mode: str) -> None:
        with open(self.path, mode, newline="") as file:
            csv.writer(file).writerow(row)


def snapshot_epochs(epochs: int) -> list[int]:
    """The epochs at which gamma maps are kept: the first, a quarter, half way and the last (1-based)."""
    return sorted({1, max(1, round(epochs / 4)), max(1, round(epochs / 2)), epochs})


def examples_of_distinct_classes(batches, count: int, scanned: int = 2048) -> np.ndarray:
    """The first image of each class met in `batches`, up to `count` (then other images if classes run out).

    A sorted split starts with one class; these examples show the maps of several.

    Args:
        batches: an iterable of (images, labels) batches, labels as indices or one-hot.
        count: how many images to return.
        scanned: stop reading batches after this many images (a large split is not read through).

    Returns:
        An array of at most `count` images.

    """
    chosen, classes, others, seen = [], set(), [], 0
    for images, labels in batches:
        if seen >= scanned:
            break
        seen += len(images)
        labels = np.asarray(labels)
        labels = labels.argmax(-1) if labels.ndim > 1 else labels
        for image, label in zip(np.asarray(images), labels, strict=True):
            if int(label) not in classes:
                classes.add(int(label))
                chosen.append(image)
            elif len(others) < count:
                others.append(image)
        if len(chosen) >= count:
            break
    return np.stack((chosen + others)[:count])


class GammaSnapshots(keras.callbacks.Callback):
    """Keep each pair's which-pixel maps (gamma, averaged over channels) of a few fixed images at chosen epochs.

    L2T-www only (gamma is the which network's output, `L2TModel.meta_weights`). The `.npz` holds `images`
    (the preprocessed inputs), `pairs` and one `epoch<e>_pair<k>` array (images, H, W) per kept epoch and pair;
    `plot_gamma` draws it. Written after each kept epoch (a resumed run keeps the earlier ones).

    Args:
        inputs: the fixed images (preprocessed).
        path: the `.npz` file.
        epochs: the 1-based epochs to keep (`snapshot_epochs`).
        append: keep an existing file's snapshots (a resumed run); False starts anew.

    """

    def __init__(self, inputs, path: str, epochs, append: bool = True):
        super().__init__()
        self.inputs, self.path, self.epochs, self.append = inputs, path, set(epochs), append

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs or self.model.method != "l2t_www":
            return
        weights = self.model.meta_weights(self.model.source_maps(self.inputs))
        saved = dict(np.load(self.path)) if self.append and os.path.exists(self.path) else {}
        self.append = True  # later epochs of this run add to this one's file
        saved.update({"images": np.asarray(self.inputs), "pairs": np.asarray(self.model.pairs)})
        for index, (_, _, which) in enumerate(weights):
            saved[f"epoch{epoch + 1}_pair{index}"] = tf.reduce_mean(which, axis=-1).numpy()
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        partial = self.path + ".partial.npz"
        np.savez_compressed(partial, **saved)
        os.replace(partial, self.path)  # never a half-written file


def _figure(rows: int, columns: int, size: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size * columns, size * rows * 0.8), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False)


def plot_weight_trajectories(files: dict[str, str], path: str, weights: int = 6) -> list[str]:
    """One panel per followed weight, one line per method (the L2T-www thesis' Figure 36).

    Args:
        files: method label -> its `WeightTrajectory` CSV (runs sharing initialisation and seed).
        path: the PNG to write.
        weights: how many weights to draw (evenly spread over the layers).

    Returns:
        The weight columns drawn.

    """
    tables = {label: np.genfromtxt(file, delimiter=",", names=True, deletechars="") for label, file in files.items()}
    columns = [name for name in next(iter(tables.values())).dtype.names if name != "epoch"]
    starts = {round(float(table[columns[0]][0]), 6) for table in tables.values()}
    if len(starts) > 1:
        raise ValueError(f"The runs do not start from the same weights ({sorted(starts)}); use the same seed.")
    drawn = [columns[int(index)] for index in np.linspace(0, len(columns) - 1, min(weights, len(columns)))]
    figure, axes = _figure(2, (len(drawn) + 1) // 2, 3.2)
    for axis, column in zip(axes.flat, drawn, strict=False):
        for label, table in tables.items():
            axis.plot(table["epoch"], table[column], label=label, linewidth=1)
        axis.set_title(column, fontsize=8)
        axis.set_xlabel("epoch", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return drawn


def kept_epochs(saved) -> list[int]:
    """The epochs a loaded `GammaSnapshots` file holds maps of, in order.

    Args:
        saved: the loaded `.npz` (keys `epoch<e>_pair<k>`).

    Returns:
        The sorted epochs.

    """
    return sorted({int(key[len("epoch") :].split("_")[0]) for key in saved.files if key.startswith("epoch")})


def plot_gamma(npz_path: str, path: str, pair: int | None = None) -> int:
    """The images (top row) and their channel-mean gamma at each kept epoch (one row per epoch) for one pair.

    The colour scale is centred on 1 (gamma's start, uniform weighting) and shared by all maps of the figure.

    Args:
        npz_path: a `GammaSnapshots` file.
        path: the PNG to write.
        pair: the pair to draw; default the one whose maps vary most over the pixels at the last kept epoch.

    Returns:
        The pair drawn.

    """
    saved = np.load(npz_path)
    epochs = kept_epochs(saved)
    if pair is None:
        last = [saved[f"epoch{epochs[-1]}_pair{index}"] for index in range(len(saved["pairs"]))]
        pair = int(np.argmax([np.mean(np.std(maps, axis=(1, 2))) for maps in last]))
    images = saved["images"]
    # gamma starts at exactly 1 (uniform); one scale centred there for every map, so epochs compare by eye
    reach = max(float(np.max(np.abs(saved[f"epoch{epoch}_pair{pair}"] - 1.0))) for epoch in epochs) + 1e-6
    figure, axes = _figure(len(epochs) + 1, len(images), 1.8)
    for column, image in enumerate(images):
        shown = (image - image.min()) / (np.ptp(image) + 1e-12)
        axes[0, column].imshow(shown)
        for row, epoch in enumerate(epochs, start=1):
            maps = saved[f"epoch{epoch}_pair{pair}"]
            drawn = axes[row, column].imshow(maps[column], cmap="coolwarm", vmin=1 - reach, vmax=1 + reach)
            axes[row, 0].set_ylabel(f"epoch {epoch}", fontsize=8)
        figure.colorbar(drawn, ax=axes[-1, column], fraction=0.05)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    source, target = saved["pairs"][pair]
    figure.suptitle(f"gamma (mean over channels), pair {pair}: source tap {source} -> target tap {target}", fontsize=9)
    figure.savefig(path, dpi=110)
    return pair
