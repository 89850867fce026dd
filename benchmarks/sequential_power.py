"""How `--seeds auto` (keras_l2t.sequential) compares with fixed seeds: error, power and seeds used, by simulation.

    python benchmarks/sequential_power.py --grids 20000

Each simulated grid is two methods with normal accuracies of spread 1 whose means differ by `effect` spreads. Rows:
the sequential design (looks at 4, 6, 8, 10 seeds a side, alpha 0.05, margin 1 point given in spreads), and fixed
4 or 10 seeds a side with the pooled t-test and the exact Mann-Whitney test at alpha 0.05. Prints a markdown table.
"""

import argparse
import math

import numpy as np
from scipy import stats as scipy_stats

from keras_l2t import sequential


def fixed(test: str, seeds: int, effect: float, grids: int, rng: np.random.Generator, alpha: float) -> float:
    """The share of grids a single test at `seeds` a side calls different."""
    x = rng.standard_normal((grids, seeds)) + effect
    y = rng.standard_normal((grids, seeds))
    if test == "t":
        t, _, _, freedom = sequential.t_statistic(x, y)
        p = 2 * scipy_stats.t.sf(np.abs(t), freedom)
    else:
        p = scipy_stats.mannwhitneyu(x, y, axis=1, method="exact").pvalue
    return float((p < alpha).mean())


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", type=int, default=20000)
    parser.add_argument("--effects", default="0,0.5,1,2", help="comma list of true differences, in spreads")
    parser.add_argument("--margin", type=float, default=0.3, help="equivalence margin, in spreads")
    args = parser.parse_args()
    design = sequential.Design(margin=args.margin)
    rng = np.random.default_rng(2026)
    error = math.sqrt(design.alpha * (1 - design.alpha) / args.grids)
    print(f"{args.grids} simulated grids per cell; Monte Carlo standard error of a rate near alpha: {error:.4f}\n")
    print("| true difference (spreads) | procedure | called different | right way round | equivalent | seeds a side |")
    print("|---|---|---|---|---|---|")
    for effect in (float(text) for text in args.effects.split(",")):
        result = sequential.simulate(design, effect, args.grids, rng)
        looks = "/".join(str(seeds) for seeds in design.looks())
        print(
            f"| {effect:g} | sequential ({looks}) | {result['different']:.3f} | {result['first_better']:.3f} "
            f"| {result['equivalent']:.3f} | {result['mean_seeds']:.2f} |"
        )
        for seeds in (4, 10):
            for test, name in (("t", "t-test"), ("mw", "Mann-Whitney")):
                rate = fixed(test, seeds, effect, args.grids, rng, design.alpha)
                print(f"| {effect:g} | fixed {seeds}, {name} | {rate:.3f} | | | {seeds} |")


if __name__ == "__main__":
    main()
