"""Keep issue 4's thesis-protocol results in the repository, then print their tables.

    python benchmarks/thesis_record.py [--out runs/thesis_n10] [--record docs/thesis_n10_runs.csv]
    python benchmarks/thesis_record.py --out runs/thesis_n50 --record docs/thesis_n50_runs.csv
    python benchmarks/thesis_record.py --out runs/thesis_imbalanced --record docs/thesis_imbalanced_runs.csv \
        --per-class --plot docs/imbalanced_per_class.png

`runs/` is not committed, and the machine that held seeds 0-3 of the grid was shut down with it (2026-11-25): the
figures of those runs survive only as the README and session notes recorded them (test accuracy rounded to
0.1 %), which is what the record's first rows hold, each with its source. This script folds every finished run of
`results.csv` into the committed record (one row per method and seed; a row already there is kept), so that a
finished run is never lost again, and prints the mean ± std table with Mann-Whitney p-values (each method
against the previous one, and against scratch) and the per-seed table, computed from the record by
`keras_l2t.stats`. With `--missing SEED` it prints instead the methods that have no row for that seed yet (a comma
list, for `benchmarks/thesis_protocol.sh`; `--methods` narrows the list). A record that does not exist yet starts
empty. `--per-class` keeps each run's per-class test accuracy too and prints the per-class table (minority first)
with Mann-Whitney tests of the minority class against scratch; `--plot PNG` draws the table as bars too.
"""

import argparse
import datetime
import os

import pandas as pd

from keras_l2t import report, stats
from keras_l2t.l2t import META_METHODS
from keras_l2t.results import read_results

COLUMNS = [
    "strategy", "samples_per_class", "seed", "epochs_run", "best_epoch", "test_accuracy", "wall_seconds",
    "meta_optimizer", "source",
]  # fmt: skip
ORDER = ["scratch", "ufm", "fm_uniform", "l2t_ww", "l2t_www"]


def _keys(table: pd.DataFrame) -> list[tuple]:
    return [(row.strategy, int(row.samples_per_class), int(row.seed)) for row in table.itertuples()]


def new_rows(out: str, record: pd.DataFrame, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """The runs of the grid folder `out` (its results.csv) that the record does not hold yet, in `columns`."""
    results = read_results(out)
    known = set(_keys(record))
    fresh = results.loc[[key not in known for key in _keys(results)]].copy()
    fresh["test_accuracy"] = fresh["test_accuracy"].round(4)  # a count out of 10,000 test images
    fresh["meta_optimizer"] = ["torch_adam" if name in META_METHODS else "" for name in fresh["strategy"]]
    fresh["source"] = f"{os.path.join(out, 'results.csv')}, recorded {datetime.date.today()}"
    return fresh[columns]


def _rank(value):
    return ORDER.index(value) if value in ORDER else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/thesis_n10", help="the grid's output folder")
    parser.add_argument("--record", default="docs/thesis_n10_runs.csv")
    parser.add_argument("--missing", type=int, metavar="SEED", help="print the methods not yet recorded for SEED")
    parser.add_argument("--methods", default=",".join(ORDER), help="the methods --missing considers (comma list)")
    parser.add_argument("--per-class", action="store_true", help="record and print per-class test accuracy")
    parser.add_argument("--plot", metavar="PNG", help="with --per-class: draw the per-class bar chart there too")
    args = parser.parse_args()
    columns = COLUMNS + ["per_class_accuracy"] if args.per_class else COLUMNS
    record = pd.DataFrame(columns=columns)
    if os.path.exists(args.record):
        record = pd.read_csv(args.record, keep_default_na=False, na_values=[""])
    if args.missing is not None:
        done = set(record.loc[record["seed"] == args.missing, "strategy"])
        print(",".join(name for name in args.methods.split(",") if name not in done))
        return
    fresh = new_rows(args.out, record, columns)
    if len(fresh):
        record = pd.concat([record, fresh], ignore_index=True)
        record = record.sort_values(["seed", "strategy"], key=lambda column: column.map(_rank), kind="stable")
        record.to_csv(args.record, index=False, float_format="%.10g")
    print(f"{len(fresh)} new run(s) recorded; {len(record)} in {args.record}\n")
    print(stats.accuracy_table(record, ORDER))
    against = stats.mann_whitney(record, ORDER, baseline="scratch")
    print(
        "\nAgainst scratch: " + ", ".join(f"{row.method} p = {stats.p_value_text(row)}" for row in against.itertuples())
    )
    print()
    print(stats.seed_table(record, ORDER))
    if args.per_class:
        print("\nTest accuracy per class (%, the minority class first):\n")
        print(report.per_class_table(record, ORDER))
        print("\n" + report.minority_tests(record, ORDER, baseline="scratch"))
        if args.plot and len(record):
            report.plot_per_class(record, args.plot, ORDER)


if __name__ == "__main__":
    main()
