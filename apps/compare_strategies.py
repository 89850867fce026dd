"""Compare transfer strategies on a dataset: every strategy x samples per class x seed, then tables and plots.

    python apps/compare_strategies.py --dataset cifar10 --preset quick
    python apps/compare_strategies.py --dataset ../shared/data/cifar10 --preset course --backbone squeezenet1_1 \
        --weights ../shared/weights/squeezenet_v1.1_imagenet_notop.h5

Results go to --out: results.csv (one row per finished run; re-running skips them), summary.md (mean +- std,
Mann-Whitney U p-values), accuracy_vs_samples.png, learning_curves.png, history/ and tb/ (TensorBoard:
`tensorboard --logdir <out>/tb`). Presets: quick (the default: both families at small N, 33 minutes on 2 CPU
cores, 28 with --executor ray --cpus-per-run 1), course (the four classic strategies, full training set), thesis
(scratch, UFM, L2T-ww, L2T-www at N = 10..150, 200 epochs, 30 seeds: for a GPU), none (every classic strategy with
the run defaults).
Offline, named weights are looked up in the folders of $KERAS_L2T_WEIGHTS_DIR. `--seeds auto` runs seeds in
rounds until each pair of methods is settled, different or equivalent (docs/seeds_auto.md).
"""

import argparse
import os
import sys

from keras_l2t import process, settings


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def seeds(text: str):
    if text == "auto":
        return text  # seeds until the ranking is settled (keras_l2t.sequential)
    if "," not in text:
        return list(range(settings.whole(1).parse(text)))  # a number of seeds: 0..n-1
    return [settings.whole(0).parse(item) for item in comma_list(text)]


def sample_sizes(text: str) -> list:
    return [item if item == "all" else settings.whole(1).parse(item) for item in comma_list(text)]


def level(text: str) -> float:
    value = settings.positive().parse(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1, got {text!r}")
    return value


def parse(argv=None, preset_names=(), strategy_names=()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_options = parser.add_argument_group("the grid: strategies x N x seeds")
    grid_options.add_argument(
        "--preset",
        choices=sorted(preset_names) + ["none"],
        help="a starting grid; any option overrides it (none: every classic strategy with the run defaults, on the "
        "whole training set). Default: quick when only --dataset is given (the CIFAR-10 demo), none as soon as "
        "--strategies, --backbone or --samples-per-class name your own run",
    )
    grid_options.add_argument("--strategies", type=comma_list, help="comma list of: " + ", ".join(strategy_names))
    grid_options.add_argument(
        "--import",
        dest="imports",
        type=comma_list,
        help="comma list of modules to import first: your own strategies (strategies.register), also on Ray workers",
    )
    grid_options.add_argument("--samples-per-class", type=sample_sizes, help="comma list of N, or 'all'")
    grid_options.add_argument(
        "--seeds",
        type=seeds,
        help="a number of seeds, a comma list of seeds, or auto: seeds in rounds of 2 until every pair that matters "
        "(each method vs the validation-picked best and vs scratch) is settled, different or equivalent "
        "(a group-sequential t-test, see keras_l2t.sequential)",
    )
    whole = settings.whole(1).parse
    grid_options.add_argument("--min-seeds", type=whole, help="with --seeds auto: seeds a side at the first look (4)")
    grid_options.add_argument("--max-seeds", type=whole, help="with --seeds auto: seeds a side at the last look (10)")
    grid_options.add_argument(
        "--equivalence-margin",
        type=settings.positive().parse,
        help="with --seeds auto: a pair is equivalent when the interval of its difference lies within +- this many "
        "accuracy points (default 1)",
    )
    grid_options.add_argument("--alpha", type=level, help="with --seeds auto: type-I error over all looks (0.05)")
    grid_options.add_argument("--baseline", help="compare every strategy with this one (default: the previous one)")
    settings.add_flags(parser.add_argument_group("each run (keras_l2t.settings; default: the preset's, else these)"))
    output = parser.add_argument_group("output and execution")
    output.add_argument(
        "--keep-models",
        choices=["best", "all", "none"],
        default="best",
        help="save runs' models under <out>/models: the one validation picks per strategy and N (default), all, none",
    )
    output.add_argument("--out", help="output folder (default runs/<preset>)")
    output.add_argument(
        "--no-cache", action="store_true", help="decode image folders again instead of using the decoded-image cache"
    )
    output.add_argument("--quiet", action="store_true", help="one line per run, no progress bars")
    output.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: runs one after another in this process (default); ray: each run a Ray task (pip install "
        '"keras_l2t[ray]"), the runs spread over the instance\'s CPUs / GPUs',
    )
    output.add_argument(
        "--ray-address", help="with --executor ray: default a new local instance; auto joins this machine's cluster"
    )
    rate = settings.positive().parse
    output.add_argument("--cpus-per-run", type=rate, help="with --executor ray: CPUs (and threads) per run (default 1)")
    output.add_argument(
        "--gpus-per-run", type=rate, help="with --executor ray: GPUs per run; a fraction shares a GPU (default 0)"
    )
    output.add_argument(
        "--tune", nargs="?", const=8, type=settings.whole(1).parse, metavar="TRIALS",
        help="first tune each strategy on validation (Optuna, TRIALS trials each, default 8; docs/tuning.md), then "
        "compare it untuned and tuned (<out>/untuned, <out>/tuned, <out>/tuning_summary.md)",
    )  # fmt: skip
    output.add_argument(
        "--search-space", help='with --tune: overrides, e.g. "learning_rate=1e-4:1e-1:log,warmup_epochs=0:5"'
    )
    args = parser.parse_args(argv)
    if "dataset" not in args:
        parser.error("the following arguments are required: --dataset")
    return args


OWN_RUN_NOTE = (
    "No --preset: running {what} with the run defaults (the backbone's own input size, augment auto, every image, "
    "one seed); add --preset quick for the CIFAR-10 demo settings."
)


def chosen_preset(args: argparse.Namespace) -> str:
    """The preset to run: the one asked for; else none when the user names their own run, else quick (the demo)."""
    if args.preset is not None:
        return args.preset
    own = {"--strategies": args.strategies, "--backbone": vars(args).get("backbone")}
    own["--samples-per-class"] = args.samples_per_class
    named = [flag for flag, value in own.items() if value is not None]
    if not named:
        return "quick"
    print(OWN_RUN_NOTE.format(what=", ".join(args.strategies or ["every classic strategy"])), flush=True)
    return "none"


def seed_design(args: argparse.Namespace):
    """The `--seeds auto` design from the arguments; None for fixed seeds (ValueError for auto options without it)."""
    from keras_l2t import sequential

    flags = {"min_seeds": "--min-seeds", "max_seeds": "--max-seeds", "alpha": "--alpha"}
    flags["margin"] = "--equivalence-margin"
    margin = None if args.equivalence_margin is None else args.equivalence_margin / 100
    options = {"min_seeds": args.min_seeds, "max_seeds": args.max_seeds, "alpha": args.alpha, "margin": margin}
    options = {key: value for key, value in options.items() if value is not None}
    if args.seeds != "auto":
        if options:
            given = ", ".join(flags[key] for key in options)
            raise ValueError(f"{given} only apply with --seeds auto; add --seeds auto or drop them.")
        return None
    return sequential.Design(**options)


def main(argv=None) -> int:
    process.configure()  # oneDNN CPU kernels on, before TensorFlow loads (measured gain: keras_l2t.process)
    from keras_l2t.results import OutputInUse
    from keras_l2t.weights import WeightsError, WeightsUnavailableError

    from keras_l2t import executors, grid, presets, strategies, user_modules

    args = parse(argv, presets.names(), strategies.names())
    if args.no_cache:
        os.environ["KERAS_L2T_CACHE"] = "off"  # keras_l2t.folder_cache
    # the run settings given on the command line (keras_l2t.settings declares them, flags and all)
    fields = {name: value for name, value in vars(args).items() if name in settings.SETTINGS}
    fields = {name: value for name, value in fields.items() if settings.SETTINGS[name].flag}
    preset = chosen_preset(args)
    try:
        if args.imports:
            user_modules.import_modules(args.imports)  # the user's strategies, here and in Ray workers
        executor = executors.make(
            args.executor, address=args.ray_address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run
        )
        design = seed_design(args)
        if args.tune is not None or args.search_space:
            if args.tune is None or design is not None:
                raise ValueError("--search-space needs --tune, and --tune needs fixed seeds (not --seeds auto).")
            from keras_l2t import tuning_report

            given = {"samples_per_class": args.samples_per_class, "seeds": args.seeds}
            tuning_report.compare_tuned(
                None if preset == "none" else preset,
                args.out or f"runs/{'compare' if preset == 'none' else preset}_tuned",
                args.strategies,
                args.tune,
                executor,
                space=args.search_space,
                **{**fields, **{key: value for key, value in given.items() if value is not None}},
            )
            return 0
        grid.compare(
            None if preset == "none" else preset,
            out=args.out or f"runs/{'compare' if preset == 'none' else preset}",
            strategy_names=args.strategies,
            samples_per_class=args.samples_per_class,
            seeds=None if design else args.seeds,
            seed_design=design,
            quiet=args.quiet,
            baseline=args.baseline,
            keep_models=args.keep_models,
            executor=executor,
            **fields,
        )
    except KeyboardInterrupt:
        print(
            "\nInterrupted: every finished run is in results.csv and the interrupted one is backed up;\n"
            "run the same command again to continue."
        )
        return 130
    except (
        KeyError,
        ValueError,
        FileNotFoundError,
        ImportError,
        OutputInUse,
        WeightsError,
        WeightsUnavailableError,
    ) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
