"""Seeds until the ranking is settled: a group-sequential two-sample t-test with alpha spending, and TOST equivalence.

The design (Jennison & Turnbull 2000, "Group Sequential Methods", ch. 7): the seeds of two methods are compared at
looks after n_1 < n_2 < ... < n_K = max seeds a side (`Design.looks`). At look j the pooled two-sample t statistic
(equal seeds a side) is compared with a boundary c_j; the boundaries spend the two-sided type-I error alpha with
the Lan-DeMets O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), t = n_j / n_K
(Lan & DeMets 1983, Biometrika 70(3), eq. 3.3). Under a null of equal normal means the t statistics at every look
are pivotal (free of the mean and the spread), so `boundaries` finds each c_j by simulating the null once with
numpy: the share of null paths that cross at look j and at no earlier look equals alpha(t_j) - alpha(t_{j-1}).
The error over all looks is alpha however many looks are taken, and stays at most alpha when looks are skipped
(a pair first tested at a later look) or a pair stops early for equivalence (the boundaries do not count on it).

A pair is "equivalent within the margin" at look j when the 1 - 2 a_j confidence interval of the difference of
means (pooled t) lies inside (-margin, margin): two one-sided tests (TOST, Schuirmann 1987) at level a_j each, with
a_j = alpha(t_j) - alpha(t_{j-1}), so by the union bound over looks the chance of calling a pair equivalent whose
difference is at least the margin stays at most alpha. O'Brien-Fleming spending keeps the early looks strict:
a pair settles at the first look only when the evidence is overwhelming.

Why a t statistic and not Mann-Whitney's: at 4 seeds a side no rank test can spend less than 2 / C(8, 4) = 0.029,
so an alpha-spending rank design cannot stop at the first looks at all; the t statistic can, when the gap is
large against the spread (ImageNet features against scratch).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONTINUE, FIRST_BETTER, SECOND_BETTER, EQUIVALENT, NOT_SETTLED = 0, 1, -1, 2, 3
SIMULATED_PATHS = 400_000  # null paths behind the boundaries: a boundary's own error is below 0.001 in alpha
BOUNDARY_SEED = 20261207


@dataclasses.dataclass(frozen=True)
class Design:
    """A group-sequential comparison of seeds: looks at min_seeds, min_seeds + step, ..., max_seeds a side.

    Attributes:
        min_seeds: seeds a side at the first look (at least 2: a t statistic needs a spread).
        max_seeds: seeds a side at the last look.
        step: seeds added per round.
        alpha: two-sided type-I error over all looks, and the equivalence tests' error.
        margin: equivalence margin, in the compared column's units (accuracy shares: 0.01 is 1 point).

    """

    min_seeds: int = 4
    max_seeds: int = 10
    step: int = 2
    alpha: float = 0.05
    margin: float = 0.01

    def __post_init__(self):
        if self.min_seeds < 2:
            raise ValueError(f"--min-seeds {self.min_seeds}: give at least 2 (a t statistic needs two seeds a side).")
        if self.max_seeds < self.min_seeds:
            raise ValueError(f"--max-seeds {self.max_seeds} is below --min-seeds {self.min_seeds}; raise it.")
        if self.step < 1:
            raise ValueError(f"seed step {self.step}: give at least 1.")
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha {self.alpha}: give a level between 0 and 1, e.g. 0.05.")
        if not self.margin > 0:
            raise ValueError(f"--equivalence-margin {self.margin}: give a positive margin, e.g. 1 (point).")

    def looks(self) -> list[int]:
        """Seeds a side at each look, the last one max_seeds."""
        return list(range(self.min_seeds, self.max_seeds, self.step)) + [self.max_seeds]


def obrien_fleming_spending(fraction, alpha: float) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) (Lan & DeMets 1983).

    Args:
        fraction: information fraction(s) t in (0, 1].
        alpha: the two-sided level spent by t = 1.

    Returns:
        The cumulative type-I error spent by each t.

    """
    fraction = np.asarray(fraction, float)
    return 2 * scipy_stats.norm.sf(scipy_stats.norm.isf(alpha / 2) / np.sqrt(fraction))


def spent(design: Design) -> np.ndarray:
    """The alpha each look spends: alpha(t_j) - alpha(t_{j-1}), t_j = n_j / max_seeds (they sum to alpha)."""
    cumulative = obrien_fleming_spending(np.array(design.looks()) / design.max_seeds, design.alpha)
    return np.diff(cumulative, prepend=0.0)


def t_statistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The pooled two-sample t statistic of x against y over the last axis (Student 1908).

    Args:
        x: values, shape (..., n).
        y: values, shape (..., m).

    Returns:
        (t, difference of means, its standard error, degrees of freedom n + m - 2); where both samples have no
        spread t is 0 for equal means, else +-inf.

    """
    n, m = x.shape[-1], y.shape[-1]
    difference = x.mean(axis=-1) - y.mean(axis=-1)
    pooled = ((n - 1) * x.var(axis=-1, ddof=1) + (m - 1) * y.var(axis=-1, ddof=1)) / (n + m - 2)
    error = np.sqrt(pooled * (1 / n + 1 / m))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(error > 0, difference / np.where(error > 0, error, 1), np.sign(difference) * np.inf)
    return np.nan_to_num(t, nan=0.0), difference, error, n + m - 2


@functools.lru_cache(maxsize=16)
def boundaries(design: Design) -> np.ndarray:
    """The critical |t| at each look, found by simulating the null (normal, equal means) once per design.

    Args:
        design: the looks and alpha.

    Returns:
        c_j per look: look j rejects when |t| >= c_j (inf where the look can spend nothing).

    """
    rng = np.random.default_rng(BOUNDARY_SEED)
    x = rng.standard_normal((SIMULATED_PATHS, design.max_seeds), dtype=np.float32)
    y = rng.standard_normal((SIMULATED_PATHS, design.max_seeds), dtype=np.float32)
    alive, critical, crossed = np.ones(SIMULATED_PATHS, bool), [], 0
    target = np.cumsum(spent(design)) * SIMULATED_PATHS
    for look, seeds in enumerate(design.looks()):
        size = np.abs(t_statistic(x[alive, :seeds], y[alive, :seeds])[0])
        allowed = int(np.floor(target[look])) - crossed  # paths this look may reject
        if allowed < 1:
            critical.append(np.inf)
            continue
        bound = float(np.partition(size, size.size - allowed)[size.size - allowed])
        critical.append(bound)
        rejected = np.zeros_like(alive)
        rejected[alive] = size >= bound
        crossed += int(rejected.sum())
        alive &= ~rejected
    return np.array(critical)


def decide(x: np.ndarray, y: np.ndarray, look: int, design: Design) -> np.ndarray:
    """The decision at one look for one pair, or for many (simulated grids) at once.

    Args:
        x: the first method's values, shape (..., n) with n = design.looks()[look] (a missing run or two leave
            fewer: then the boundary is that of n a side, an approximation).
        y: the second method's values, shape (..., m).
        look: the look's index in `design.looks()`.
        design: the design.

    Returns:
        Codes per pair: FIRST_BETTER / SECOND_BETTER (the boundary crossed; the sign of the difference of
        means), EQUIVALENT (the 1 - 2 a_j interval inside +-margin), or CONTINUE.

    """
    t, difference, error, freedom = t_statistic(np.asarray(x, float), np.asarray(y, float))
    different = np.abs(t) >= boundaries(design)[look]
    half_width = scipy_stats.t.isf(spent(design)[look], freedom) * error
    equivalent = ~different & (np.abs(difference) + half_width < design.margin)
    codes = np.where(different, np.where(difference > 0, FIRST_BETTER, SECOND_BETTER), CONTINUE)
    return np.where(equivalent, EQUIVALENT, codes).astype(int)


def simulate(design: Design, effect: float, grids: int, rng: np.random.Generator) -> dict:
    """Run the design on simulated pairs of methods (normal accuracies, spread 1, the first `effect` higher).

    Args:
        design: the design (its margin in units of the spread).
        effect: the true difference of means, in spreads.
        grids: how many simulated grids.
        rng: the random generator.

    Returns:
        {"different": share of grids settled different, "first_better": share settled with the first better,
        "equivalent": share settled equivalent, "mean_seeds": mean seeds a side used}.

    """
    x = rng.standard_normal((grids, design.max_seeds)) + effect
    y = rng.standard_normal((grids, design.max_seeds))
    codes, seeds_used = np.full(grids, CONTINUE), np.full(grids, design.max_seeds)
    for look, seeds in enumerate(design.looks()):
        open_ = codes == CONTINUE
        codes[open_] = decide(x[open_, :seeds], y[open_, :seeds], look, design)
        seeds_used[open_ & (codes != CONTINUE)] = seeds
    return {
        "different": float(np.isin(codes, (FIRST_BETTER, SECOND_BETTER)).mean()),
        "first_better": float((codes == FIRST_BETTER).mean()),
        "equivalent": float((codes == EQUIVALENT).mean()),
        "mean_seeds": float(seeds_used.mean()),
    }


@dataclasses.dataclass
class Outcome:
    """A pair's state: its decision code, the seeds a side it rests on, and the t statistic there."""

    code: int
    seeds: int
    difference: float
    t: float


@dataclasses.dataclass
class Settlement:
    """The sequential state of a grid: outcomes, seeds still needed, the validation-picked best, the design.

    Attributes:
        outcomes: `Outcome` per (N, method, other), in the order the pairs settled.
        needed: seeds a side per (method, N) for the next look; empty when every pair is settled.
        best: the validation-picked best method per N.
        design: the design.

    """

    outcomes: dict
    needed: dict
    best: dict
    design: Design


def pairs_that_matter(window: pd.DataFrame, methods: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Each method against the validation-picked best (highest mean validation accuracy) and against scratch.

    Args:
        window: the runs of one N seen so far.
        methods: the methods in order.

    Returns:
        (the best method, the pairs (method, other) without repeats).

    """
    present = [name for name in methods if name in set(window["strategy"])]
    means = window.groupby("strategy")["validation_accuracy"].mean().reindex(present)
    best = means.idxmax() if means.notna().any() else None
    pairs = []
    for method in present:
        for other in (best, "scratch" if "scratch" in present else None):
            if other and other != method and (method, other) not in pairs and (other, method) not in pairs:
                pairs.append((method, other))
    return best, pairs


def _values(window: pd.DataFrame, method: str, metric: str) -> np.ndarray:
    return window.loc[window["strategy"] == method, metric].dropna().to_numpy(float)


def settle(results: pd.DataFrame, methods: list[str], design: Design, metric: str = "test_accuracy") -> Settlement:
    """Replay the design's looks over a grid's results, per samples-per-class value.

    Seeds are numbered 0, 1, ...: look j uses the seeds below n_j of both methods. A pair settled at a look keeps
    its decision; a pair that becomes one that matters later (the best changed) is tested from that look on.

    Args:
        results: one row per run (strategy, samples_per_class, seed, validation_accuracy and `metric`).
        methods: the methods in order.
        design: the design.
        metric: the compared column.

    Returns:
        The outcomes so far, and `needed`: seeds per (method, N) for the next look (empty when all settled).

    """
    outcomes, needed, best = {}, {}, {}
    for samples in dict.fromkeys(results["samples_per_class"]):
        at = results[results["samples_per_class"] == samples]
        for look, seeds in enumerate(design.looks()):
            window = at[at["seed"] < seeds]
            best[samples], pairs = pairs_that_matter(window, methods)
            pending = [pair for pair in pairs if (samples, *pair) not in outcomes]
            if not pending:
                break
            members = {name for pair in pending for name in pair}
            if any((window["strategy"] == name).sum() < seeds for name in members):
                needed.update({(name, samples): seeds for name in members})
                break
            for first, second in pending:
                x, y = _values(window, first, metric), _values(window, second, metric)
                code = int(decide(x, y, look, design)) if min(len(x), len(y)) > 1 else CONTINUE
                if code == CONTINUE and look == len(design.looks()) - 1:
                    code = NOT_SETTLED
                if code != CONTINUE:
                    t = float(t_statistic(x, y)[0]) if min(len(x), len(y)) > 1 else float("nan")
                    outcomes[(samples, first, second)] = Outcome(code, seeds, float(x.mean() - y.mean()), t)
    return Settlement(outcomes, needed, best, design)
