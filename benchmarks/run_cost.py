"""Where one run's wall time goes: data, build, training steps, validation, the rest of fit, test, saving.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/run_cost.py --dataset ../shared/data/cifar10 \
        --strategy scratch --samples-per-class 10 --epochs 200

Runs `experiment.run` once with the matching routine's settings (`presets.MATCHING_ROUTINE`; override them with
flags) and times its phases by wrapping the library's functions; the training steps are timed one by one by a
callback. Prints one JSON line; `ratio` is the wall time over (training steps + the test pass), the figure issue 16
bounds by 1.25.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import tempfile
import time

import keras

from keras_l2t import callbacks, experiment, presets
from keras_l2t.config import RunConfig

PHASES = {"load_data": "data", "build_model": "build", "_test_results": "test", "_keep": "save_model"}


class PhaseTimer(keras.callbacks.Callback):
    """Seconds spent in training steps during `fit` (the first one, which traces the step, apart)."""

    def __init__(self, seconds: dict):
        super().__init__()
        self.seconds = seconds

    def _start(self, *_, **__):
        self.started = time.perf_counter()

    def _add(self, phase):
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - self.started

    on_train_batch_begin = _start

    def on_train_batch_end(self, batch, logs=None):
        self._add("train_steps" if "first_step" in self.seconds else "first_step")


def timed(function, phase: str, seconds: dict):
    """`function`, adding its wall time to `seconds[phase]`."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started

    return wrapper


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/cifar10")
    parser.add_argument("--strategy", default="scratch")
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--validate-every", type=int, default=None, help="default: RunConfig's")
    parser.add_argument("--backup-every", type=int, default=None, help="default: the matching routine's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    for name, phase in PHASES.items():
        setattr(experiment, name, timed(getattr(experiment, name), phase, seconds))
    validate = callbacks.PeriodicValidation.on_epoch_end
    callbacks.PeriodicValidation.on_epoch_end = timed(validate, "validation", seconds)
    make_callbacks = experiment._callbacks
    experiment._callbacks = lambda *a, **k: _with_timer(make_callbacks(*a, **k), seconds)
    settings = {**presets.MATCHING_ROUTINE, "family": "matching", "verbose": 0}
    for field in ("validate_every", "backup_every"):
        if getattr(args, field) is not None:
            settings[field] = getattr(args, field)
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(
            args.strategy, dataset=args.dataset, samples_per_class=args.samples_per_class, epochs=args.epochs,
            seed=args.seed, out=out, **settings,
        )  # fmt: skip
        started = time.perf_counter()
        result = experiment.run(config)
        wall = time.perf_counter() - started
    seconds["rest"] = wall - sum(seconds.values())
    floor = seconds["first_step"] + seconds["train_steps"] + seconds["test"]
    print(json.dumps({
        "strategy": args.strategy, "samples_per_class": args.samples_per_class, "epochs": args.epochs,
        "validate_every": getattr(config, "validate_every", 1), "wall_seconds": round(wall, 1),
        "seconds": {phase: round(value, 1) for phase, value in seconds.items()},
        "ratio": round(wall / floor, 3), "test_accuracy": result["test_accuracy"], "best_epoch": result["best_epoch"],
    }), flush=True)  # fmt: skip


def _with_timer(made, seconds):
    callbacks, early_stop, backup = made
    return [PhaseTimer(seconds), *callbacks], early_stop, backup


if __name__ == "__main__":
    main()
