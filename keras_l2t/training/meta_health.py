"""Did the L2T meta-networks learn? How far they moved in a run, how far they could have, and a warning if not.

Measured on a fixed probe batch at the start of `fit` and after every epoch (`MetaHealth`): each pair's mean
where weight lambda, its what-weights' entropy (log C is uniform, the what network's start) and their largest
ratio to 1/C, L2T-www's gamma range (1 everywhere at the start); and, with or without a probe, the largest change
of any meta weight and its bound, rate x meta steps (`meta_schedule.movement_bound`).

A run is flagged at the end of `fit` (`warnings.warn`) unless it moved (the thresholds below; measured movement
comes first: at bound 0.032 a run moved its lambdas by 0.68 and 0.77):
- "could not move" when it did not and the bound is below `MINIMUM_BOUND` (0.05). Recorded runs at bounds of
  0.001-0.02 (N = 10 at the reference rate 1e-4) kept their what entropy within 0.03 % of log C and their
  lambdas within 0.091; the reference's own budgets give 0.72 (STL-10) to 7 (CIFAR-100). The meta-networks are
  sensitive: on CIFAR-10 at N = 10 one Adam step of 0.025 per meta weight moved a lambda by 1.46 and a what
  entropy by 16 % of log C, so a bound of 0.05 is not too small in itself.
- "did not move" when, on the probe, no pair's what entropy dropped by `MINIMUM_ENTROPY_DROP` (1 % of log C), no
  pair's lambda changed by `MINIMUM_WHERE_CHANGE` (0.1) and gamma stayed within `MINIMUM_GAMMA_CHANGE` (0.1) of 1;
  without a probe, when no meta weight moved by `MINIMUM_WEIGHT_CHANGE` (0.01).
"""

from __future__ import annotations

import json
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.training import meta_schedule
from keras_l2t.training.callbacks import entropy

__all__ = ["MINIMUM_BOUND", "WEIGHTS_FILE", "MetaHealth", "figures", "health_table", "mean_weights", "probe", "verdict"]

MINIMUM_BOUND = 0.05
WEIGHTS_FILE = "meta_weights.npz"
MINIMUM_ENTROPY_DROP = 0.01
MINIMUM_WHERE_CHANGE = 0.1
MINIMUM_GAMMA_CHANGE = 0.1
MINIMUM_WEIGHT_CHANGE = 0.01
COULD_NOT, DID_NOT, MOVED, DIVERGED = "could not move", "did not move", "moved", "diverged"
MOVEMENT_KEYS = ("weight_change", "where_change", "where_rank_correlation", "what_entropy_drop", "what_ratio",
                 "gamma_min", "gamma_max")  # fmt: skip
ADVICE = (
    "scale the meta rate to the run (L2TModel(meta_reach=...), --meta-reach; start small: at N = 10, 1.0 made the "
    "matching loss diverge), take several meta steps per iteration (meta_steps) or a meta warm-up (meta_warmup), "
    "or train for more iterations"
)


def probe(model, inputs) -> dict[str, np.ndarray]:
    """Each pair's meta weights on a batch: mean lambda, mean what entropy, largest C x w, gamma's range.

    Args:
        model: an L2T-ww / L2T-www `L2TModel`.
        inputs: a preprocessed batch of images.

    Returns:
        Arrays with one value per pair: `where`, `what_entropy` (nats), `channels` (C), `what_ratio` (the largest
        w / (1/C) over the batch); for L2T-www also `gamma_min` and `gamma_max`.

    """
    rows: dict[str, list] = {}
    for what, where, which in model.meta_weights(model.source_maps(inputs)):
        channels = what.shape[-1]
        values = {"where": tf.reduce_mean(where), "what_entropy": entropy(what), "channels": channels}
        values["what_ratio"] = channels * tf.reduce_max(what)
        if which is not None:
            values.update(gamma_min=tf.reduce_min(which), gamma_max=tf.reduce_max(which))
        for key, value in values.items():
            rows.setdefault(key, []).append(float(value))
    return {key: np.asarray(value) for key, value in rows.items()}


def mean_weights(model, inputs) -> dict[str, np.ndarray]:
    """Each pair's lambda and what weights averaged over a batch: which pairs and channels the meta-networks pick.

    Args:
        model: an L2T-ww / L2T-www `L2TModel`.
        inputs: a preprocessed batch of images.

    Returns:
        `where` (one mean lambda per pair) and `what_pair<k>` (pair k's mean what weights, one per source channel).

    """
    arrays: dict[str, np.ndarray] = {"where": []}
    for index, (what, where, _) in enumerate(model.meta_weights(model.source_maps(inputs))):
        arrays["where"].append(float(tf.reduce_mean(where)))
        arrays[f"what_pair{index}"] = tf.reduce_mean(what, axis=0).numpy()
    arrays["where"] = np.asarray(arrays["where"])
    return arrays


def figures(start: dict | None, end: dict | None, weight_change: float, bound: float) -> dict:
    """The health figures of a run from its probes at the start and now.

    Args:
        start: `probe` at the start of `fit` (None without a probe batch).
        end: `probe` now.
        weight_change: the largest |change| of any meta weight since the start.
        bound: `meta_schedule.movement_bound` of the run.

    Returns:
        `bound` and `weight_change`; with probes, `where_change` (largest |change| of a pair's mean lambda),
        `where_rank_correlation` (Spearman, pairs ranked by lambda at the start and now), `what_entropy_drop`
        (largest drop of a pair's what entropy, a fraction of log C) and `what_ratio`; for L2T-www, `gamma_min`
        and `gamma_max` over every pair.

    """
    result = {"bound": float(bound), "weight_change": float(weight_change)}
    if start is None or end is None:
        return result
    drops = (start["what_entropy"] - end["what_entropy"]) / np.log(end["channels"])
    result["where_change"] = float(np.max(np.abs(end["where"] - start["where"])))
    result["where_rank_correlation"] = _rank_correlation(start["where"], end["where"])
    result["what_entropy_drop"] = float(np.max(drops))
    result["what_ratio"] = float(np.max(end["what_ratio"]))
    if "gamma_min" in end:
        result["gamma_min"], result["gamma_max"] = float(end["gamma_min"].min()), float(end["gamma_max"].max())
    return result


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    if len(first) < 2:
        return 1.0
    ranks = [np.argsort(np.argsort(values)).astype(float) for values in (first, second)]
    return float(np.corrcoef(*ranks)[0, 1])


def verdict(result: dict, minimum_bound: float = MINIMUM_BOUND) -> str:
    """A run's state from its `figures`: "could not move", "diverged", "did not move" or "moved" (see the module)."""
    if not all(math.isfinite(result[key]) for key in MOVEMENT_KEYS if key in result):
        return DIVERGED  # first: a run whose meta weights became NaN diverged, whatever it could have moved
    if "what_entropy_drop" not in result:
        moved = result["weight_change"] >= MINIMUM_WEIGHT_CHANGE
    else:
        gamma = max(abs(result.get("gamma_min", 1.0) - 1.0), abs(result.get("gamma_max", 1.0) - 1.0))
        moved = (
            result["what_entropy_drop"] >= MINIMUM_ENTROPY_DROP
            or result["where_change"] >= MINIMUM_WHERE_CHANGE
            or gamma >= MINIMUM_GAMMA_CHANGE
        )
    if moved:  # measured movement first: a bound of 0.03 moved lambdas by 0.7 (issue 37's schedule search)
        return MOVED
    return COULD_NOT if result["bound"] < minimum_bound else DID_NOT


def message(result: dict, rate: float, steps: int, minimum_bound: float = MINIMUM_BOUND) -> str:
    """The warning for a run that could not or did not move its meta-networks (empty if they moved)."""
    state = verdict(result, minimum_bound)
    if state == COULD_NOT:
        return (
            f"The L2T meta-networks could not learn in this run: in {steps} meta steps at meta rate {rate:g}, Adam "
            f"moves a meta weight by at most about {result['bound']:.3g} (rate x steps; below {minimum_bound:g}), "
            f"so the pair weights stay near their random start. To let them learn, {ADVICE}."
        )
    if state == DIVERGED:
        return f"The L2T meta-networks diverged (a figure is NaN or infinite); lower the meta rate. {ADVICE}."
    if state == DID_NOT:
        moved = ", ".join(f"{key} {result[key]:.4g}" for key in MOVEMENT_KEYS if key in result)
        return (
            f"The L2T meta-networks did not move in this run although they could (bound {result['bound']:.3g}): "
            f"{moved} (what_entropy_drop is a fraction of log C; thresholds: 1 % of log C, lambda 0.1, gamma 0.1, "
            f"weights {MINIMUM_WEIGHT_CHANGE}). The run was feature matching with fixed pair weights; {ADVICE}."
        )
    return ""


class MetaHealth(keras.callbacks.Callback):
    """How far an L2TModel's meta-networks moved: TensorBoard, `fit`'s logs, `result`, and a warning at the end.

    At the start of `fit` it notes the meta weights, the probe and the bound (rate x the run's planned meta
    steps, after `meta_schedule.MetaRate` if that comes first); after every epoch it adds `meta_*` figures to the
    logs and writes `health/*` scalars to `<log_dir>/meta`; at the end it sets `result` (the figures and
    `verdict`) and warns when the run could not or did not move them (`message`). Does nothing for a model
    without meta-networks.

    Args:
        inputs: a fixed, preprocessed batch to probe the meta-networks on (None: weights and bound only).
        log_dir: a TensorBoard run folder (None: no TensorBoard).
        minimum_bound: the smallest bound that is not flagged as "could not move".

    """

    def __init__(self, inputs=None, log_dir: str | None = None, minimum_bound: float = MINIMUM_BOUND):
        super().__init__()
        self.inputs, self.minimum_bound = inputs, minimum_bound
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "meta")) if log_dir else None
        # the probe's mean lambdas and what weights at the start and the end (`meta_plots.plot_meta_weights`)
        self.weights_path = os.path.join(log_dir, "meta", WEIGHTS_FILE) if log_dir and inputs is not None else None
        self.result: dict = {}

    def _active(self) -> bool:
        return bool(getattr(self.model, "phi", None))

    def on_train_begin(self, logs=None):
        """Note the meta weights, the probe, the meta rate and the run's planned meta steps."""
        if not self._active():
            return
        self.phi_start = [np.array(variable.numpy()) for variable in self.model.phi]
        self.start = probe(self.model, self.inputs) if self.inputs is not None else None
        self.weights_start = mean_weights(self.model, self.inputs) if self.weights_path else None
        self.rate = meta_schedule.meta_rate(self.model)
        iterations = meta_schedule.fit_iterations(self.params)
        self.steps = meta_schedule.run_meta_steps(self.model, iterations)
        self.bound = meta_schedule.movement_bound(self.rate, self.steps)

    def _figures(self) -> dict:
        changes = [
            float(np.max(np.abs(variable.numpy() - start), initial=0.0))
            for variable, start in zip(self.model.phi, self.phi_start, strict=True)
        ]
        change = float(np.max(changes, initial=0.0))  # NaN if any is (Python's max would skip a later NaN)
        end = probe(self.model, self.inputs) if self.inputs is not None else None
        return figures(self.start, end, change, self.bound)

    def on_epoch_end(self, epoch, logs=None):
        """Log the figures so far (`meta_*` in the logs, `health/*` in TensorBoard)."""
        if not self._active():
            return
        self.result = self._figures()
        if logs is not None:
            logs.update({f"meta_{key}": value for key, value in self.result.items()})
        if self.writer is not None:
            with self.writer.as_default(step=epoch):
                for key, value in self.result.items():
                    tf.summary.scalar(f"health/{key}", value)
            self.writer.flush()

    def on_train_end(self, logs=None):
        """Set `result` (the last epoch's figures) with its `verdict`, and warn unless the meta-networks moved."""
        if not self._active():
            return
        moved = self.result or self._figures()  # the last epoch's (before any restore of the best epoch's weights)
        self.result = {**moved, "meta_steps": self.steps, "meta_rate": self.rate}
        self.result["verdict"] = verdict(self.result, self.minimum_bound)
        if self.weights_path:
            end = mean_weights(self.model, self.inputs)
            arrays = {f"{when}_{key}": value for when, weights in (("start", self.weights_start), ("end", end))
                      for key, value in weights.items()}  # fmt: skip
            os.makedirs(os.path.dirname(self.weights_path), exist_ok=True)
            np.savez(self.weights_path, pairs=np.asarray(self.model.pairs), **arrays)
        text = message(self.result, self.rate, self.steps, self.minimum_bound)
        if text:
            warnings.warn(text, RuntimeWarning, stacklevel=2)


def health_table(results) -> str:
    """Markdown: each L2T run's health (`meta_health` column of `results.csv`, JSON); empty without any.

    Args:
        results: one row per run.

    Returns:
        A table: run, meta steps, rate, bound, largest what-entropy drop (% of log C), largest lambda change,
        gamma range, verdict.

    """
    if "meta_health" not in results:
        return ""
    lines = []
    for row in results.itertuples():
        text = row.meta_health
        if not isinstance(text, str) or not text:
            continue
        health = json.loads(text)
        drop, where = health.get("what_entropy_drop", math.nan), health.get("where_change", math.nan)
        gamma = f"{health['gamma_min']:.3f}-{health['gamma_max']:.3f}" if "gamma_min" in health else "-"
        lines.append(
            f"| {row.run} | {health['meta_steps']} | {health['meta_rate']:.3g} | {health['bound']:.3g} | "
            f"{100 * drop:.2f} % | {where:.3f} | {gamma} | {health['verdict']} |"
        )
    if not lines:
        return ""
    header = (
        "| run | meta steps | meta rate | bound | largest what-entropy drop (of log C) | largest lambda change "
        "| gamma range | verdict |\n|---|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(lines)
