"""Rank pretrained backbones for a dataset before training: transferability scores in about a minute.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python apps/rank_backbones.py --dataset ../shared/data/cats_vs_dogs \
        --candidates mobilenet_v2@96,160,224/block_13_expand_relu,out_relu squeezenet1_1@128,224 resnet32@32/all \
        --weights mobilenet_v2=../shared/weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5 --validate

A candidate is "backbone[@size,size...][/tap,tap...|/all]" (defaults: the backbone's usual size and its last tap;
the taps are the registry's, `backbones.spec(name).taps`). Each is scored on N images per class by LogME,
H-score and, for weights that keep their source classifier, LEEP and NCE (keras_l2t.transferability). --validate
also fits a linear probe per candidate and prints Kendall's tau between each score and the probe's held-out
accuracy. Writes ranking.md, ranking.csv and ranking.png to --out.
"""

import argparse
import csv
import os
import sys

from keras_l2t import process


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="an image folder (<root>/<split>/<class>/*) or a TFDS name")
    parser.add_argument("--candidates", nargs="+", required=True, help="backbone[@sizes][/taps|/all] ...")
    parser.add_argument("--weights", nargs="*", default=[], help="backbone=weights (a named pretraining or a file)")
    parser.add_argument("--samples-per-class", type=int, default=50, help="N labelled images per class (default 50)")
    parser.add_argument("--validate", action="store_true", help="fit a linear probe per candidate; print tau")
    parser.add_argument("--validation", type=float, default=0.1, help="held-out fraction, or a count if >= 1")
    parser.add_argument("--score", default="logme", help="the score that orders the table (default logme)")
    parser.add_argument("--seed", type=int, default=0, help="decides the split and the N images")
    parser.add_argument("--out", default="ranking", help="folder for ranking.md, ranking.csv, ranking.png")
    return parser.parse_args(argv)


def _weights(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        backbone, separator, weights = pair.partition("=")
        if not separator or not weights:
            raise ValueError(f"--weights takes backbone=weights (e.g. mobilenet_v2=file.weights.h5), got {pair!r}.")
        result[backbone] = weights
    return result


def _write_csv(rows, path: str) -> None:
    from keras_l2t import ranking

    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        timings = [f"{name}_seconds" for name in ("features", *ranking.SCORES, "probe", "validation_features")]
        writer.writerow(["candidate", "weights", "dims", *ranking.SCORES, *timings, "probe_accuracy", "notes"])
        for row in rows:
            scores = [row.scores.get(name, "") for name in ranking.SCORES]
            seconds = [row.seconds.get(name.removesuffix("_seconds"), "") for name in timings]
            accuracy = "" if row.probe_accuracy is None else row.probe_accuracy
            writer.writerow(
                [row.candidate.name, row.candidate.weights, row.dims, *scores, *seconds, accuracy, "; ".join(row.notes)]
            )


def main(argv=None) -> int:
    process.configure()  # oneDNN CPU kernels on, before TensorFlow loads (see keras_l2t.process)
    from keras_l2t import ranking, ranking_report
    from keras_l2t.weights import WeightsUnavailableError

    args = parse(argv)
    validation = int(args.validation) if args.validation >= 1 else args.validation
    try:
        if args.score not in ranking.SCORES:
            raise ValueError(f"--score {args.score!r} is not one of {', '.join(ranking.SCORES)}.")
        candidates = ranking.parse_candidates(args.candidates, _weights(args.weights))
        progress = lambda row: print(f"scored {row.candidate.name} ({row.seconds['features']:.1f} s forward)")  # noqa: E731
        rows = ranking.rank(
            args.dataset,
            candidates,
            samples_per_class=args.samples_per_class,
            validation=validation,
            validate=args.validate,
            seed=args.seed,
            progress=progress,
        )
    except (FileNotFoundError, ValueError, KeyError, ImportError, WeightsUnavailableError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    for note in sorted({note for row in rows for note in row.notes}):
        print(f"note: {note}")
    text = [ranking_report.table(rows, args.score)]
    if args.validate:
        text.append(ranking_report.correlation_table(ranking.correlations(rows)))
    text += [ranking_report.suggestion(rows, args.score), ranking_report.costs(rows)]
    print("\n\n".join(text))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ranking.md"), "w") as file:
        file.write("\n\n".join(text) + "\n")
    _write_csv(rows, os.path.join(args.out, "ranking.csv"))
    title = f"{os.path.basename(os.path.normpath(args.dataset))}, N = {args.samples_per_class} per class"
    ranking_report.plot(rows, os.path.join(args.out, "ranking.png"), title)
    print(f"wrote {args.out}/ranking.md, ranking.csv, ranking.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
