"""Compare transfer strategies on a dataset: every strategy x samples per class x seed, then tables and plots.

    python apps/compare_strategies.py --dataset cifar10 --preset quick
    python apps/compare_strategies.py --dataset ../shared/data/cifar10 --preset course --backbone squeezenet1_1 \
        --weights ../shared/weights/squeezenet_v1.1_imagenet_notop.h5

Results go to --out: results.csv (one row per finished run; re-running skips them), summary.md (mean +- std,
Mann-Whitney U p-values), accuracy_vs_samples.png, learning_curves.png, history/ and tb/ (TensorBoard:
`tensorboard --logdir <out>/tb`). Presets: quick (the default: both families at small N, 30 minutes on 2 CPU
cores), course (the four classic strategies, full training set), thesis (scratch, UFM, L2T-ww, L2T-www at
N = 10..150, 200 epochs, 30 seeds: for a GPU), none (every classic strategy with the run defaults).
Offline, named weights are looked up in the folders of $KERAS_L2T_WEIGHTS_DIR. `--seeds auto` runs seeds in
rounds until each pair of methods is settled, different or equivalent (docs/seeds_auto.md).
"""

import argparse
import os
import sys

from keras_l2t import process


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got {text!r}")
    return value


def positive(text: str) -> int:
    return whole(text, 1)


def seeds(text: str):
    if text == "auto":
        return text  # seeds until the ranking is settled (keras_l2t.sequential)
    if "," not in text:
        return list(range(whole(text, 1)))  # a number of seeds: 0..n-1
    return [whole(item, 0) for item in comma_list(text)]


def sample_sizes(text: str) -> list:
    return [item if item == "all" else whole(item, 1) for item in comma_list(text)]


def devices(text: str) -> int | str:
    return text if text == "all" else whole(text, 1)


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def level(text: str) -> float:
    value = rate(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1, got {text!r}")
    return value


def split(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1) or a whole count of images, got {text!r}")
    return int(value) if value >= 1 else value


def parse(argv=None, preset_names=(), strategy_names=()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a TFDS name (cifar10, ...) or an image folder")
    parser.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    parser.add_argument("--download", action="store_true", help="let TFDS download the dataset")
    parser.add_argument(
        "--preset",
        choices=sorted(preset_names) + ["none"],
        help="a starting grid; any option overrides it (none: every classic strategy with the run defaults, on the "
        "whole training set). Default: quick when only --dataset is given (the CIFAR-10 demo), none as soon as "
        "--strategies, --backbone or --samples-per-class name your own run",
    )
    parser.add_argument("--strategies", type=comma_list, help="comma list of: " + ", ".join(strategy_names))
    parser.add_argument("--backbone", help="backbone of the classic strategies")
    parser.add_argument("--weights", help="its weights: imagenet (or another named set), a file, or none")
    parser.add_argument("--source", help="source network of the feature-matching methods (default resnet32)")
    parser.add_argument("--source-weights", help="its weights: tinyimagenet, a file, or none")
    parser.add_argument("--target", help="target network of the feature-matching methods (default vgg9)")
    parser.add_argument(
        "--family",
        choices=["classic", "matching"],
        help="the loop scratch trains with (default: matching when a matching method is in the grid, else classic)",
    )
    parser.add_argument("--samples-per-class", type=sample_sizes, help="comma list of N, or 'all'")
    parser.add_argument("--imbalanced", action="store_true", default=None, help="the last class gets N / 10")
    parser.add_argument(
        "--seeds",
        type=seeds,
        help="a number of seeds, a comma list of seeds, or auto: seeds in rounds of 2 until every pair that matters "
        "(each method vs the validation-picked best and vs scratch) is settled, different or equivalent "
        "(a group-sequential t-test, see keras_l2t.sequential)",
    )
    parser.add_argument("--min-seeds", type=positive, help="with --seeds auto: seeds a side at the first look (4)")
    parser.add_argument("--max-seeds", type=positive, help="with --seeds auto: seeds a side at the last look (10)")
    parser.add_argument(
        "--equivalence-margin",
        type=rate,
        help="with --seeds auto: a pair is equivalent when the interval of its difference lies within +- this many "
        "accuracy points (default 1)",
    )
    parser.add_argument("--alpha", type=level, help="with --seeds auto: the type-I error over all looks (default 0.05)")
    parser.add_argument("--epochs", type=positive)
    parser.add_argument("--batch-size", type=positive)
    parser.add_argument("--image-size", type=positive, help="input height and width")
    parser.add_argument("--learning-rate", type=rate)
    parser.add_argument(
        "--fine-tune-epochs",
        type=positive,
        help="two-phase recipe: after --epochs, unfreeze the whole backbone and train this many more epochs",
    )
    parser.add_argument(
        "--meta-every", type=positive, help="L2T methods: the meta step every k iterations (default 1, the reference)"
    )
    parser.add_argument("--meta-reach", type=rate, help="L2T methods: meta rate = this / the meta steps")
    parser.add_argument("--meta-steps", type=positive, help="L2T methods: meta steps per meta iteration (default 1)")
    parser.add_argument("--meta-warmup", type=lambda text: whole(text, 0), help="L2T: meta steps before training")
    parser.add_argument("--fine-tune-learning-rate", type=rate, help="the second phase's rate (default 1e-5)")
    parser.add_argument("--validation", type=split, help="validation split: a fraction, or a count if >= 1")
    parser.add_argument(
        "--validation-groups",
        metavar="REGEX",
        help="carve validation in whole groups: the first match (or group) of REGEX in a file name is its group, "
        "e.g. '^([0-9]+)_' for GTSRB's <track>_<frame> files (near-duplicate frames stay on one side)",
    )
    parser.add_argument(
        "--augment",
        help="training augmentation: auto (default: a crop for small images, small rotations for photos, never a "
        "mirror), none, or a comma list of crop, flip, rotation (flip only where a mirror image keeps its class)",
    )
    parser.add_argument("--patience", type=positive, help="early-stopping patience (default: train every epoch)")
    parser.add_argument(
        "--validate-every",
        type=positive,
        help="validate every k epochs (and at the first and last); the early-stop point is the best validated one",
    )
    parser.add_argument("--backup-every", type=positive, help="back each run up every this many epochs (default 1)")
    parser.add_argument(
        "--keep-models",
        choices=["best", "all", "none"],
        default="best",
        help="save runs' models under <out>/models: the one validation picks per strategy and N (default), all, none",
    )
    parser.add_argument("--baseline", help="compare every strategy with this one (default: the previous one)")
    parser.add_argument("--out", help="output folder (default runs/<preset>)")
    parser.add_argument(
        "--no-cache", action="store_true", help="decode image folders again instead of using the decoded-image cache"
    )
    parser.add_argument("--quiet", action="store_true", help="one line per run, no progress bars")
    parser.add_argument(
        "--devices",
        type=devices,
        help="train each run on N devices (GPUs) or all, under tf.distribute.MirroredStrategy; --batch-size is the "
        "global batch (default 1)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=["bfloat16", "float16"],
        help="Keras mixed precision (mixed_bfloat16 / mixed_float16 with loss scaling); L2T methods keep their meta "
        "step in float32. On a CPU without bfloat16 units it is slower, see the README",
    )
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: runs one after another in this process (default); ray: each run a Ray task (pip install "
        '"keras_l2t[ray]"), the runs spread over the instance\'s CPUs / GPUs',
    )
    parser.add_argument(
        "--ray-address", help="with --executor ray: default a new local instance; auto joins this machine's cluster"
    )
    parser.add_argument("--cpus-per-run", type=rate, help="with --executor ray: CPUs (and threads) per run (default 1)")
    parser.add_argument(
        "--gpus-per-run", type=rate, help="with --executor ray: GPUs per run; a fraction shares a GPU (default 0)"
    )
    return parser.parse_args(argv)


NONE_MEANS_NO = ("weights", "source_weights")  # the flags whose value "none" means None (random initialisation)
OWN_RUN_NOTE = (
    "No --preset: running {what} with the run defaults (the backbone's own input size, augment auto, every image, "
    "one seed); add --preset quick for the CIFAR-10 demo settings."
)


def chosen_preset(args: argparse.Namespace) -> str:
    """The preset to run: the one asked for; else none when the user names their own run, else quick (the demo)."""
    if args.preset is not None:
        return args.preset
    own = {"--strategies": args.strategies, "--backbone": args.backbone, "--samples-per-class": args.samples_per_class}
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
    from keras_l2t import executors, grid, presets, strategies
    from keras_l2t.results import OutputInUse
    from keras_l2t.weights import WeightsError, WeightsUnavailableError

    args = parse(argv, presets.names(), strategies.names())
    if args.no_cache:
        os.environ["KERAS_L2T_CACHE"] = "off"  # keras_l2t.folder_cache
    validation = args.validation
    fields = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "download": args.download or None,
        "backbone": args.backbone,
        "weights": args.weights,
        "source": args.source,
        "source_weights": args.source_weights,
        "target": args.target,
        "family": args.family,
        "imbalanced": args.imbalanced,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "learning_rate": args.learning_rate,
        "fine_tune_epochs": args.fine_tune_epochs,
        "meta_every": args.meta_every,
        **{key: getattr(args, key) for key in ("meta_reach", "meta_steps", "meta_warmup")},
        "fine_tune_learning_rate": args.fine_tune_learning_rate,
        "validation": validation,
        "augment": args.augment,
        "validation_groups": args.validation_groups,
        "patience": args.patience,
        "validate_every": args.validate_every,
        "backup_every": args.backup_every,
        "devices": args.devices,
        "mixed_precision": args.mixed_precision,
    }
    # "none" means "no weights" only where None does; --augment none is an augmentation of its own
    fields = {
        key: None if value == "none" and key in NONE_MEANS_NO else value
        for key, value in fields.items()
        if value is not None  # options not given
    }
    preset = chosen_preset(args)
    try:
        executor = executors.make(
            args.executor, address=args.ray_address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run
        )
        design = seed_design(args)
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
