"""Issue 3 acceptance: the classic strategies on real data, with a table of train / validation / test / time.

    python benchmarks/classic_strategies.py --shared ../shared --experiment squeezenet_cifar10
    python benchmarks/classic_strategies.py --shared ../shared --experiment mobilenet_cats_vs_dogs

squeezenet_cifar10: our course's experiment (SqueezeNet, ImageNet weights, CIFAR-10 JPEG copy split
45,000 / 5,000 / 10,000): feature extractor, last two fire modules, all layers, random init.
mobilenet_cats_vs_dogs: the TensorFlow transfer-learning tutorial (MobileNetV2, 160x160): feature
extraction, then the two-phase recipe's second phase (the whole network fine-tuned at 1e-5); the table shows
the test accuracy after each phase.
Results are appended to <out>/results.jsonl as each run finishes.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import os

from keras_l2t.config import RunConfig
from keras_l2t.experiment import run

EXPERIMENTS = {
    "squeezenet_cifar10": {
        "common": {"dataset": "data/cifar10", "backbone": "squeezenet1_1", "validation": 5000, "batch_size": 64},
        "weights": "weights/squeezenet_v1.1_imagenet_notop.h5",
        "runs": ["feature_extraction", "fine_tune_last", "full_fine_tune", "scratch"],
    },
    "mobilenet_cats_vs_dogs": {
        "common": {"dataset": "data/cats_vs_dogs", "backbone": "mobilenet_v2", "image_size": 160, "batch_size": 32},
        "weights": "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
        "runs": ["feature_extraction+fine_tune"],
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="squeezenet_cifar10")
    parser.add_argument("--strategies", help="comma list (default: all of the experiment's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, help="input size (default: the experiment's)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--out", default="runs/classic")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    experiment = EXPERIMENTS[args.experiment]
    common = dict(experiment["common"], dataset=os.path.join(args.shared, experiment["common"]["dataset"]))
    if args.image_size:
        common["image_size"] = args.image_size
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for entry in args.strategies.split(",") if args.strategies else experiment["runs"]:
        strategy, _, second = entry.partition("+")
        config = RunConfig(
            strategy,
            weights=os.path.join(args.shared, experiment["weights"]),
            epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs if second else 0,
            learning_rate=args.learning_rate,
            out=args.out,
            verbose=args.verbose,
            **common,
        )
        result = run(config)
        rows.append(result)
        with open(os.path.join(args.out, "results.jsonl"), "a") as file:
            file.write(json.dumps(result) + "\n")
        print(json.dumps({key: result[key] for key in ("run", "best_epoch", "test_accuracy", "wall_seconds")}))
    print(f"\n| strategy | epochs | size | best epoch | train | validation | test | seconds |\n|{'---|' * 8}")
    for row in rows:
        size = row["image_size"] or "default"
        name = row["strategy"]
        if row["fine_tune_epochs"]:
            print(
                f"| {name} (phase 1) | {row['epochs']} | {size} | | | | {row['test_accuracy_before_fine_tune']:.3f} | |"
            )
            name += " + fine-tune"
        print(
            f"| {name} | {row['epochs_run']} | {size} | {row['best_epoch']} | {row['train_accuracy']:.3f} | "
            f"{row['validation_accuracy']:.3f} | {row['test_accuracy']:.3f} | {row['wall_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
