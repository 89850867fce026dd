"""Tables and significance tests of a comparison's results (one row per run, see `grid`).

The thesis-style table gives mean +- std of test accuracy per method and samples per class, and the two-sided
Mann-Whitney U test (scipy.stats.mannwhitneyu) of each method against a baseline; the course-style table gives
train / validation / test accuracy and time per strategy and the model that validation picks. The effect sizes
beside the tests (`difference_interval`, `probability_of_improvement`, `hodges_lehmann`) live in
`keras_l2t.analysis.intervals`, the plots in `keras_l2t.analysis.accuracy_plots`; both are importable from here too.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from keras_l2t.training.callbacks import read_scalars

SIGNIFICANCE = 0.05


def _percent(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _order(results: pd.DataFrame, order=None) -> list[str]:
    present = list(dict.fromkeys(results["strategy"]))
    return [name for name in order if name in present] if order else present


def _sample_sizes(results: pd.DataFrame) -> list:
    values = list(dict.fromkeys(results["samples_per_class"]))
    numbers = sorted(value for value in values if str(value) != "all")
    return numbers + [value for value in values if str(value) == "all"]


def smallest_p_value(runs: int, baseline_runs: int) -> float:
    """The smallest two-sided exact Mann-Whitney p-value that `runs` against `baseline_runs` values can give.

    It comes when every value of one side is above every value of the other: 2 / C(n + m, n), at most 1. Below
    SIGNIFICANCE only from 4 against 4 runs (or 3 against 5, 2 against 8) on; with fewer, no result can be
    significant, whatever the accuracies.

    Args:
        runs: n, the method's runs.
        baseline_runs: m, the baseline's runs.

    Returns:
        The p-value, 1 where either side has no run.

    """
    if runs < 1 or baseline_runs < 1:
        return 1.0
    return min(1.0, 2 / math.comb(runs + baseline_runs, runs))


EXACT_ARRANGEMENTS = 100_000  # tied values this few ways to split: scipy's exact permutation test, not its normal one


def _mann_whitney_u(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """U and the two-sided p-value of a Mann-Whitney test of `a` against `b`.

    With tied values scipy's default is the normal approximation, which at 4 v 4 runs can give p below any exact
    p-value; where the pooled values split few ways, the p-value is exact over all the splits instead (scipy's
    permutation test takes two runs a side at least; one run cannot reach p < 0.05 anyway, see `smallest_p_value`).
    """
    tied = len(np.unique(np.concatenate([a, b]))) < len(a) + len(b)
    method = "auto"
    if tied and min(len(a), len(b)) > 1 and math.comb(len(a) + len(b), len(a)) <= EXACT_ARRANGEMENTS:
        method = scipy_stats.PermutationMethod(n_resamples=np.inf)
    test = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method=method)
    return float(test.statistic), float(test.pvalue)


def mann_whitney(
    results: pd.DataFrame, order=None, baseline: str | None = None, metric: str = "test_accuracy"
) -> pd.DataFrame:
    """Two-sided Mann-Whitney U tests of test accuracy (or another column), per samples-per-class value.

    Args:
        results: one row per run with strategy, samples_per_class and the `metric` column.
        order: the methods in order; default their order of appearance.
        baseline: compare every method with this one; None compares each with the previous in `order`.
        metric: the column compared; runs where it is missing are left out.

    Returns:
        Rows (samples_per_class, method, baseline, runs, baseline_runs, U, p_value, significant,
        too_few_runs); `too_few_runs` is True where no outcome could reach p < SIGNIFICANCE with these run counts
        (see `smallest_p_value`), so the p-value cannot show a difference between the methods.

    """
    methods, rows = _order(results, order), []
    for samples in _sample_sizes(results):
        at = results[results["samples_per_class"] == samples]
        for index, method in enumerate(methods):
            against = baseline or (methods[index - 1] if index else None)
            if against is None or against == method:
                continue
            a = at.loc[at["strategy"] == method, metric].dropna().to_numpy(float)
            b = at.loc[at["strategy"] == against, metric].dropna().to_numpy(float)
            if len(a) and len(b):
                u, p = _mann_whitney_u(a, b)
            else:
                u, p = float("nan"), float("nan")
            too_few = smallest_p_value(len(a), len(b)) >= SIGNIFICANCE
            rows.append((samples, method, against, len(a), len(b), u, p, bool(p < SIGNIFICANCE), too_few))
    columns = [
        "samples_per_class", "method", "baseline", "runs", "baseline_runs", "U", "p_value", "significant",
        "too_few_runs",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def accuracy_table(results: pd.DataFrame, order=None, baseline: str | None = None) -> str:
    """The thesis-style markdown table: test accuracy (%) mean +- std (runs) per method and N.

    A `*` marks a significant difference (p < 0.05) from the baseline (see `mann_whitney`).

    Args:
        results: one row per run.
        order: the methods in order.
        baseline: see `mann_whitney`.

    Returns:
        Markdown text: the table, then the table of p-values.

    """
    sizes, methods = _sample_sizes(results), _order(results, order)
    tests = mann_whitney(results, methods, baseline)
    marks = {(row.samples_per_class, row.method): row for row in tests.itertuples()}
    lines = ["| method | " + " | ".join(f"N = {size}" for size in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for method in methods:
        cells = []
        for size in sizes:
            values = results.loc[
                (results["strategy"] == method) & (results["samples_per_class"] == size), "test_accuracy"
            ].dropna()
            if values.empty:
                cells.append("")
                continue
            test = marks.get((size, method))
            mark = "*" if test is not None and test.significant else ""
            spread = f" ± {100 * values.std(ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{100 * values.mean():.1f}{spread}{mark} ({len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + p_value_table(tests, "test accuracy")


def p_value_table(tests: pd.DataFrame, what: str) -> str:
    """Markdown: a titled table of Mann-Whitney tests, one row per test.

    Args:
        tests: from `mann_whitney`.
        what: what was compared, for the title ("test accuracy").

    Returns:
        The title line, a blank line and the table (N, method, vs, U, p).

    """
    lines = [f"Two-sided Mann-Whitney U tests of {what} (* : p < {SIGNIFICANCE:g}):", ""]
    lines += ["| N | method | vs | U | p |", "|---|---|---|---|---|"]
    for row in tests.itertuples():
        lines.append(f"| {row.samples_per_class} | {row.method} | {row.baseline} | {row.U:g} | {p_value_text(row)} |")
    return "\n".join(lines)


def p_value_text(test) -> str:
    """A test's p-value as the tables print it: `*` when significant, a note when the runs are too few.

    Args:
        test: a row of `mann_whitney` (itertuples).

    Returns:
        "n/a" without runs, else the p-value to 3 digits and its mark or note.

    """
    if math.isnan(test.p_value):
        return "n/a"
    if test.too_few_runs:
        return f"{test.p_value:.3g} ({test.runs} v {test.baseline_runs} runs: too few for p < {SIGNIFICANCE:g})"
    return f"{test.p_value:.3g}{' *' if test.significant else ''}"


def seed_table(results: pd.DataFrame, order=None) -> str:
    """Markdown tables of test accuracy (%) per method and seed, one per samples-per-class value.

    A seed fixes the training subset and the initial weights, so the methods of one column saw the same images:
    this shows whether a difference of means holds seed by seed.

    Args:
        results: one row per run, with a `seed` column.
        order: the methods in order.

    Returns:
        Markdown text.

    """
    seeds, parts = sorted(set(results["seed"])), []
    for size in _sample_sizes(results):
        at = results[results["samples_per_class"] == size]
        lines = [f"N = {size}:", "", "| method | " + " | ".join(f"seed {seed}" for seed in seeds) + " |"]
        lines.append("|---" * (len(seeds) + 1) + "|")
        for method in _order(at, order):
            rows = at[at["strategy"] == method].groupby("seed")["test_accuracy"].mean()
            lines.append(f"| {method} | " + " | ".join(_percent(rows.get(seed)) for seed in seeds) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def course_table(results: pd.DataFrame, order=None) -> str:
    """The course-style markdown table: per strategy, train / validation / test accuracy (%) and time.

    With several seeds the values are means. The last line names the strategy validation picks and its test
    accuracy (the honest choice: test accuracy never picks).

    Args:
        results: one row per run.
        order: the strategies in order.

    Returns:
        Markdown text.

    """
    lines = [
        "| strategy | network | epochs run | best epoch | train | validation | test | seconds | runs |",
        "|---" * 9 + "|",
    ]
    means = {}
    for method in _order(results, order):
        rows = results[results["strategy"] == method]
        mean = rows[["train_accuracy", "validation_accuracy", "test_accuracy", "wall_seconds"]].mean(numeric_only=True)
        means[method] = mean
        lines.append(
            f"| {method} | {rows['network'].iloc[0]} | {rows['epochs_run'].mean():g} | {rows['best_epoch'].mean():g}"
            f" | {_percent(mean['train_accuracy'])} | {_percent(mean['validation_accuracy'])}"
            f" | {_percent(mean['test_accuracy'])} | {mean['wall_seconds']:.0f} | {len(rows)} |"
        )
    scored = {name: mean for name, mean in means.items() if not math.isnan(mean["validation_accuracy"])}
    if scored:
        chosen = max(scored, key=lambda name: scored[name]["validation_accuracy"])
        lines += [
            "",
            f"Validation picks **{chosen}** (validation {_percent(scored[chosen]['validation_accuracy'])} %, "
            f"test {_percent(scored[chosen]['test_accuracy'])} %).",
        ]
    return "\n".join(lines)


def summary(results: pd.DataFrame, order=None, baseline: str | None = None, course: bool = False) -> str:
    """The whole markdown summary of a comparison.

    Args:
        results: one row per run.
        order: the strategies in order.
        baseline: see `mann_whitney`.
        course: lead with the course-style table.

    Returns:
        Markdown text.

    """
    parts = ["# Results", "", f"{len(results)} runs; test accuracy in %.", ""]
    if course:
        parts += ["## Strategies", "", course_table(results, order), ""]
    parts += ["## Test accuracy by samples per class", "", accuracy_table(results, order, baseline), ""]
    if 1 < results["seed"].nunique() <= 10:
        parts += ["## Test accuracy by seed", "", seed_table(results, order), ""]
    if not course:
        parts += ["## Per strategy (means over runs)", "", course_table(results, order), ""]
    return "\n".join(parts)


def meta_weight_drift(tb_dir: str, runs) -> pd.DataFrame:
    """How far the L2T meta-networks moved during each run, from `MetaWeightsLogger`'s TensorBoard scalars.

    The what network starts at zero (uniform weights over C channels, entropy log C), the where network at its
    random initialisation; the first values are logged after the first epoch. At N = 10 per class a 200-epoch
    run makes only 200 meta steps, which this shows directly.

    Args:
        tb_dir: a comparison's `<out>/tb` folder.
        runs: run names (rows of `results.csv` whose strategy is l2t_ww or l2t_www).

    Returns:
        One row per run and pair: run, pair, epochs, where_first, where_last, what_entropy_first,
        what_entropy_last (nats).

    """
    rows = []
    for run in runs:
        scalars = read_scalars(os.path.join(tb_dir, run, "meta"))
        for tag in sorted(tag for tag in scalars if tag.startswith("where/")):
            pair = tag.split("/", 1)[1]
            where, entropy = scalars[tag], scalars.get(f"what_entropy/{pair}", [(0, np.nan)])
            rows.append({
                "run": run, "pair": pair, "epochs": len(where),
                "where_first": where[0][1], "where_last": where[-1][1],
                "what_entropy_first": entropy[0][1], "what_entropy_last": entropy[-1][1],
            })  # fmt: skip
    return pd.DataFrame(rows)


def meta_drift_table(drift: pd.DataFrame) -> str:
    """Markdown: per run, the mean where weight, its largest change and the largest what-entropy drop.

    Args:
        drift: from `meta_weight_drift`.

    Returns:
        A markdown table (one line per run).

    """
    lines = [
        "| run | epochs logged | where: mean first -> last | largest where change | largest what-entropy drop |",
        "|---|---|---|---|---|",
    ]
    for run, rows in drift.groupby("run", sort=False):
        change = (rows["where_last"] - rows["where_first"]).abs().max()
        drop = (rows["what_entropy_first"] - rows["what_entropy_last"]) / rows["what_entropy_first"]
        lines.append(
            f"| {run} | {rows['epochs'].max()} | {rows['where_first'].mean():.3f} -> {rows['where_last'].mean():.3f}"
            f" | {change:.3f} | {100 * drop.max():.2f} % of log C |"
        )
    return "\n".join(lines)
