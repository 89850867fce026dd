"""Seeds until settled (keras_l2t.sequential) and the intervals beside every test (keras_l2t.intervals)."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from conftest import load_app
from scipy import stats as scipy_stats

from keras_l2t.analysis import intervals, sequential
from keras_l2t.running import grid
from keras_l2t.running.results import read_results

GRIDS = 4000  # simulated grids per rate: its Monte Carlo standard error is sqrt(p (1 - p) / GRIDS)


def tolerance(rate: float, grids: int = GRIDS) -> float:
    """Three Monte Carlo standard errors of a rate estimated from `grids` simulated grids."""
    return 3 * math.sqrt(rate * (1 - rate) / grids)


def test_false_positive_rate_stays_at_alpha_over_all_looks():
    design = sequential.Design()
    null = sequential.simulate(design, effect=0.0, grids=GRIDS, rng=np.random.default_rng(1))
    assert null["different"] <= design.alpha + tolerance(design.alpha)
    assert null["mean_seeds"] > design.max_seeds - 0.5  # under the null nearly every pair goes to the last look


def test_a_true_difference_settles_early_and_the_right_way_round():
    design = sequential.Design()
    shifted = sequential.simulate(design, effect=3.0, grids=GRIDS, rng=np.random.default_rng(2))
    assert shifted["first_better"] > 0.99 and shifted["mean_seeds"] < 6  # 4 or 6 seeds, not 10


def test_equivalence_is_declared_at_most_alpha_often_when_the_difference_is_the_margin():
    design = sequential.Design(margin=1.0)  # in units of the spread
    at_margin = sequential.simulate(design, effect=1.0, grids=GRIDS, rng=np.random.default_rng(3))
    assert at_margin["equivalent"] <= design.alpha + tolerance(design.alpha)
    close = sequential.simulate(dataclasses.replace(design, margin=3.0), 0.0, GRIDS, np.random.default_rng(4))
    assert close["equivalent"] > 0.9  # a wide margin and no difference: equivalent, mostly at an early look


def test_spending_adds_up_to_alpha_and_boundaries_get_less_strict():
    design = sequential.Design(min_seeds=4, max_seeds=10, alpha=0.05)
    assert design.looks() == [4, 6, 8, 10]
    assert math.isclose(sequential.spent(design).sum(), 0.05)
    bounds = sequential.boundaries(design)
    assert np.all(np.diff(bounds) < 0)
    last_alone = scipy_stats.t.isf(0.025, 18)  # a single test at 10 v 10 seeds
    assert bounds[-1] > last_alone  # the last look pays for the earlier ones


def results_table(values: dict, validation: dict | None = None) -> pd.DataFrame:
    rows = []
    for method, accuracies in values.items():
        for seed, accuracy in enumerate(accuracies):
            score = (validation or {}).get(method, accuracy)
            rows.append(dict(strategy=method, samples_per_class="10", seed=seed, test_accuracy=accuracy,
                             validation_accuracy=score))  # fmt: skip
    return pd.DataFrame(rows)


def test_settle_tests_each_method_against_the_best_and_scratch_and_asks_seeds_for_the_open_pairs():
    noise = np.random.default_rng(5).normal(0, 0.01, (3, 4))
    table = results_table(
        {"scratch": 0.30 + noise[0], "transfer": 0.60 + noise[1], "other": 0.31 + noise[2]}, {"transfer": 0.9}
    )
    settlement = sequential.settle(table, ["scratch", "transfer", "other"], sequential.Design())
    assert settlement.best == {"10": "transfer"}
    assert set(settlement.outcomes) == {("10", "scratch", "transfer"), ("10", "other", "transfer")}
    assert settlement.outcomes[("10", "scratch", "transfer")].code == sequential.SECOND_BETTER
    assert settlement.outcomes[("10", "other", "transfer")].seeds == 4
    assert settlement.needed == {("scratch", "10"): 6, ("other", "10"): 6}  # other v scratch is open


class SyntheticExecutor:
    """Runs nothing: each run's accuracy is drawn from its strategy's mean and its seed."""

    means = {"feature_extraction": 0.6, "full_fine_tune": 0.3, "scratch": 0.3}

    def runs(self, configs):
        for config in configs:
            noise = np.random.default_rng([config.seed, len(config.strategy)]).normal(0, 0.02)
            accuracy = self.means[config.strategy] + noise
            yield config, {
                **dataclasses.asdict(config), "run": config.name, "key": config.key, "network": config.network,
                "epochs_run": 1, "best_epoch": 1, "train_accuracy": accuracy, "validation_accuracy": accuracy,
                "test_accuracy": accuracy, "wall_seconds": 1.0, "diverged_epoch": None,
            }  # fmt: skip


def test_seeds_auto_adds_seeds_only_to_unsettled_methods_and_resumes(tmp_path):
    design = sequential.Design(min_seeds=4, max_seeds=8)
    options = dict(out=str(tmp_path), strategy_names=list(SyntheticExecutor.means), samples_per_class=[10],
                   dataset="synthetic", seed_design=design, executor=SyntheticExecutor())  # fmt: skip
    options["keep_models"] = "none"
    lines = []
    results, text = grid.compare(None, echo=lines.append, **options)
    seeds = results.groupby("strategy")["seed"].max() + 1
    assert seeds.to_dict() == {"feature_extraction": 4, "full_fine_tune": 8, "scratch": 8}
    assert "settled after 4 seeds: feature_extraction better" in text
    assert "| full_fine_tune | scratch | not settled at max seeds (8)" in text
    assert (tmp_path / "intervals.png").stat().st_size > 5_000
    again = []
    grid.compare(None, echo=again.append, **options)
    assert [line for line in again if " runs: " in line][-1].startswith("20 runs: 20 already finished, 0 to go")
    assert len(read_results(str(tmp_path))) == 20


def test_the_interval_of_a_known_case_is_scipys():
    x, y = np.array([0.31, 0.35, 0.28, 0.33, 0.30]), np.array([0.12, 0.15, 0.10, 0.14])
    expected = scipy_stats.bootstrap(
        (x, y), lambda a, b, axis: a.mean(axis) - b.mean(axis), n_resamples=intervals.RESAMPLES,
        method="percentile", rng=np.random.default_rng(intervals.BOOTSTRAP_SEED),
    ).confidence_interval  # fmt: skip
    assert intervals.difference_interval(x, y) == pytest.approx((expected.low, expected.high), abs=1e-12)
    low, high = intervals.difference_interval(x, y)
    assert low < x.mean() - y.mean() < high


def test_probability_of_improvement_is_u_over_n_m_with_ties_counting_half():
    x, y = np.array([3.0, 1.0, 2.0, 2.0, 5.0]), np.array([2.0, 2.0, 0.0, 4.0])
    u = scipy_stats.mannwhitneyu(x, y).statistic
    assert intervals.probability_of_improvement(x, y) == pytest.approx(u / (len(x) * len(y)))
    assert intervals.probability_of_improvement(y, x) == pytest.approx(1 - u / (len(x) * len(y)))


def test_hodges_lehmann_is_the_median_of_the_pairwise_differences():
    assert intervals.hodges_lehmann([1.0, 2.0, 10.0], [0.0, 1.0]) == 1.5  # differences 1, 0, 2, 1, 10, 9


def test_effect_table_puts_intervals_beside_each_test_and_keeps_the_too_few_runs_note():
    table = results_table({"scratch": [0.1, 0.2, 0.15], "transfer": [0.5, 0.6, 0.55]})
    text = intervals.effect_table(table, ["scratch", "transfer"], "scratch")
    row = next(line for line in text.splitlines() if line.startswith("| 10 | transfer | scratch |"))
    assert "+40.0 [" in row and "| 1.00 |" in row and "| +40.0 |" in row
    assert "3 v 3 runs: too few for p < 0.05" in row


def test_app_rejects_auto_options_without_seeds_auto(capsys):
    app = load_app("compare_strategies")
    assert app.main(["--dataset", "x", "--max-seeds", "6"]) == 2
    assert "--max-seeds only apply with --seeds auto" in capsys.readouterr().err
    assert app.main(["--dataset", "x", "--seeds", "auto", "--min-seeds", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
