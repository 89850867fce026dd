"""Intervals and effect sizes beside every test: bootstrap intervals, probability of improvement, Hodges-Lehmann.

What a benchmark's reader needs besides a p-value (Agarwal et al. 2021, "Deep RL at the edge of the statistical
precipice", NeurIPS; Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks", MLSys):
the difference of means with a percentile bootstrap interval (`scipy.stats.bootstrap`, as rliable draws its
intervals), the probability of improvement P(X > Y) and the Hodges-Lehmann shift; and the pairs of a grid run
with `--seeds auto` (`keras_l2t.analysis.sequential`), each with how it settled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from keras_l2t.analysis import sequential

CONFIDENCE = 0.95
RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def probability_of_improvement(x, y) -> float:
    """P(X > Y): the share of pairs (x_i, y_j) with x_i > y_j, ties counting half (Agarwal et al. 2021, eq. 8).

    It equals Mann-Whitney's U of x against y divided by n m.

    Args:
        x: the first method's values (n).
        y: the second's (m).

    Returns:
        The probability, NaN when a side is empty.

    """
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    if not x.size or not y.size:
        return float("nan")
    return float(np.mean((x > y) + 0.5 * (x == y)))


def hodges_lehmann(x, y) -> float:
    """The Hodges-Lehmann shift of x against y: the median of every difference x_i - y_j (Hodges & Lehmann 1963).

    Args:
        x: the first method's values.
        y: the second's.

    Returns:
        The shift, NaN when a side is empty.

    """
    differences = np.subtract.outer(np.asarray(x, float), np.asarray(y, float))
    return float(np.median(differences)) if differences.size else float("nan")


def _difference_of_means(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def difference_interval(x, y, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A percentile bootstrap interval of mean(x) - mean(y), x and y resampled apart (`scipy.stats.bootstrap`).

    Args:
        x: the first method's values (at least 2).
        y: the second's (at least 2).
        confidence: the interval's level.
        seed: the resampling seed (the same values give the same interval).

    Returns:
        (low, high); NaN with fewer than 2 values a side.

    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if min(len(x), len(y)) < 2:
        return float("nan"), float("nan")
    result = scipy_stats.bootstrap(
        (x, y), _difference_of_means, n_resamples=RESAMPLES, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_interval(x, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A percentile bootstrap interval of mean(x) (`scipy.stats.bootstrap`); NaN with fewer than 2 values."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return float("nan"), float("nan")
    result = scipy_stats.bootstrap(
        (x,), _mean, n_resamples=RESAMPLES, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _values(results: pd.DataFrame, samples, method: str, metric: str = "test_accuracy") -> np.ndarray:
    rows = results[(results["samples_per_class"].astype(str) == str(samples)) & (results["strategy"] == method)]
    return rows[metric].dropna().to_numpy(float)


def _points(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:+.1f}"


def _effects(x: np.ndarray, y: np.ndarray) -> str:
    low, high = difference_interval(x, y)
    interval = f" [{_points(low)}, {_points(high)}]" if low == low else ""
    improvement = probability_of_improvement(x, y)
    return (
        f"{_points(x.mean() - y.mean()) if len(x) and len(y) else 'n/a'}{interval} | "
        f"{'n/a' if improvement != improvement else f'{improvement:.2f}'} | {_points(hodges_lehmann(x, y))}"
    )


def effect_table(results: pd.DataFrame, order=None, baseline: str | None = None) -> str:
    """Markdown: every Mann-Whitney test of the summary (`stats.mann_whitney`) with its effect sizes beside it.

    Args:
        results: one row per run.
        order: the methods in order.
        baseline: see `stats.mann_whitney`.

    Returns:
        A table: N, method, vs, difference of means (points) with its 95 % bootstrap interval, P(method > vs),
        Hodges-Lehmann shift (points), and the p-value as the summary prints it; empty without tests.

    """
    from keras_l2t.analysis import stats  # here: stats re-exports this module's effect sizes

    tests = stats.mann_whitney(results, order, baseline)
    if not len(tests):
        return ""
    lines = [
        "| N | method | vs | difference (points, 95 % bootstrap interval) | P(method > vs) | Hodges-Lehmann | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in tests.itertuples():
        x = _values(results, row.samples_per_class, row.method)
        y = _values(results, row.samples_per_class, row.baseline)
        test = f"| {row.samples_per_class} | {row.method} | {row.baseline} |"
        lines.append(f"{test} {_effects(x, y)} | {stats.p_value_text(row)} |")
    return "\n".join(lines)


def verdict(outcome: sequential.Outcome, first: str, second: str, design: sequential.Design) -> str:
    """How a pair settled, in words: "settled after k seeds: A better", "... equivalent ...", or not settled."""
    if outcome.code == sequential.NOT_SETTLED:
        return f"not settled at max seeds ({outcome.seeds})"
    if outcome.code == sequential.EQUIVALENT:
        return f"settled after {outcome.seeds} seeds: equivalent within {100 * design.margin:g} point"
    better = first if outcome.code == sequential.FIRST_BETTER else second
    return f"settled after {outcome.seeds} seeds: {better} better"


def settlement_table(results: pd.DataFrame, settlement: sequential.Settlement) -> str:
    """Markdown: the `--seeds auto` pairs, how each settled, with the effect sizes of the seeds it rests on.

    Args:
        results: one row per run.
        settlement: from `sequential.settle`.

    Returns:
        The section's text (a heading, how to read it, the table).

    """
    design = settlement.design
    looks, bounds = design.looks(), sequential.boundaries(design)
    plan = ", ".join(f"{seeds} (|t| >= {bound:.2f})" for seeds, bound in zip(looks, bounds, strict=True))
    lines = [
        "## Seeds until settled (`--seeds auto`)",
        "",
        f"Each method against the validation-picked best and against scratch: a group-sequential t-test, "
        f"looks at {plan} seeds a side, two-sided alpha {design.alpha:g} over all looks (O'Brien-Fleming "
        f"spending), and equivalence when the interval of the difference lies within ±{100 * design.margin:g} "
        "point (TOST, its own alpha). The effect sizes use the seeds the decision rests on.",
        "",
        "| N | method | vs | verdict | t | difference (points, 95 % bootstrap interval) | P(method > vs) "
        "| Hodges-Lehmann |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (samples, first, second), outcome in settlement.outcomes.items():
        window = results[results["seed"] < outcome.seeds]
        x, y = _values(window, samples, first), _values(window, samples, second)
        lines.append(
            f"| {samples} | {first} | {second} | {verdict(outcome, first, second, design)} | {outcome.t:.2f} "
            f"| {_effects(x, y)} |"
        )
    best = ", ".join(f"N = {samples}: {name}" for samples, name in settlement.best.items())
    return "\n".join(lines + ["", f"Validation picks (mean validation accuracy): {best}."])


def plot_intervals(results: pd.DataFrame, path: str, order=None):
    """Mean test accuracy per method with its 95 % bootstrap interval, a panel per N (as rliable draws them).

    Args:
        results: one row per run.
        path: the PNG to write.
        order: the methods in order (top to bottom).

    Returns:
        The matplotlib Figure (saved to `path`).

    """
    from matplotlib.figure import Figure

    from keras_l2t.analysis import stats

    sizes = list(dict.fromkeys(results["samples_per_class"].astype(str)))
    methods = stats._order(results, order)
    figure = Figure(figsize=(3.2 * len(sizes) + 1.5, 0.5 * len(methods) + 1.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(sizes), sharey=True, squeeze=False)[0])
    for axis, samples in zip(axes, sizes, strict=True):
        for row, method in enumerate(methods):
            values = _values(results, samples, method)
            if not len(values):
                continue
            low, high = mean_interval(values)
            colour = f"C{row}"
            if low == low:
                axis.barh(row, 100 * (high - low), left=100 * low, height=0.6, color=colour, alpha=0.6)
            axis.plot([100 * values.mean()] * 2, [row - 0.3, row + 0.3], color="black", linewidth=1.5)
        axis.set_yticks(range(len(methods)), methods)
        axis.invert_yaxis()
        axis.set(xlabel="test accuracy (%)", title=f"N = {samples}")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle("mean and 95 % bootstrap interval over seeds", fontsize=9)
    figure.savefig(path, dpi=110)
    return figure
