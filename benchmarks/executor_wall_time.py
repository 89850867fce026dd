"""The grid's wall time with `--executor local` against `--executor ray`: the first 8 runs of the quick preset.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/executor_wall_time.py \
        --dataset ../shared/data/cifar10 [--executors local,ray] [--cpus-per-run 1]

The first 8 runs of `quick` are its classic part (SqueezeNet 1.1 at 64 px: feature_extraction and scratch,
N = 10, seeds 0-3). Each executor runs them in its own fresh folder, one after the other; `local` trains one run
at a time with TensorFlow's default threads, `ray` starts a local Ray instance and runs as many runs at once as
the machine has CPUs over --cpus-per-run (each run with that many threads). Prints one JSON line per executor
(wall seconds, the runs' test accuracies by run name) and the ratio; compare ratios measured in one call only.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import tempfile
import time

from keras_l2t import executors, grid, presets


def first_runs(dataset: str) -> tuple[list, str]:
    """The quick preset's classic part as configs, and its description."""
    part = dict(presets.get_config("quick")["parts"]["classic"])
    description = part.pop("description")
    names, samples, seeds = part.pop("strategies"), part.pop("samples_per_class"), part.pop("seeds")
    return grid.expand(names, samples, seeds, dataset=dataset, keep_model=False, **part), description


def timed(configs: list, executor, out: str) -> dict:
    """Run the configs in a fresh folder with one executor; wall seconds and test accuracies."""
    started = time.perf_counter()
    results = grid.run_grid(configs, out, quiet=True, executor=executor)
    seconds = time.perf_counter() - started
    accuracies = dict(zip(results["run"], results["test_accuracy"], strict=True))
    return {"seconds": round(seconds, 1), "accuracies": accuracies}


def main() -> None:
    """Parse the flags, time each executor, print the JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="an image folder or TFDS name (CIFAR-10 for the preset)")
    parser.add_argument("--executors", default="local,ray", help="comma list of local, ray")
    parser.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs (and threads) per run")
    args = parser.parse_args()
    configs, description = first_runs(args.dataset)
    print(f"{len(configs)} runs: {description}", flush=True)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="executor_wall_time_") as folder:
        for name in args.executors.split(","):
            executor = executors.make(name, **({"cpus_per_run": args.cpus_per_run} if name == "ray" else {}))
            measured = timed(configs, executor, f"{folder}/{name}")
            seconds[name] = measured["seconds"]
            print(json.dumps({"executor": name, **measured}), flush=True)
    if len(seconds) == 2:
        first, second = seconds
        print(json.dumps({"ratio": f"{second}/{first}", "value": round(seconds[second] / seconds[first], 3)}))


if __name__ == "__main__":
    main()
