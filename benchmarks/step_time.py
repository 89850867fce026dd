"""Seconds per train_step of scratch, UFM, L2T-ww and L2T-www (vgg9 target, resnet32 source, 32x32).

    python benchmarks/step_time.py --batch-size 128 --steps 3 [--precisions float32,bfloat16]

Also times a plain Keras `compile` + `fit` step of vgg9 on cross-entropy, as the floor. Each method runs one
`fit` of 1 + STEPS steps, timed step by step: the first step (which traces the function) is reported apart, the
others by their median, so that a stray slow step (garbage collection, a neighbour on a shared machine) does not
move the figure; the slowest is printed too.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_l2t import backbones, hardware
from keras_l2t.l2t import L2TModel


class StepTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every training step of a `fit`."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def seconds_per_step(model, dataset, steps: int) -> tuple[float, float, float, float]:
    """Seconds of the first (tracing) step, the median, the mean and the slowest of the `steps` steps after it."""
    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
    first, rest = timer.seconds[0], timer.seconds[1:]
    return first, statistics.median(rest), statistics.mean(rest), max(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", default="plain_keras,scratch,ufm,l2t_ww,l2t_www")
    parser.add_argument("--meta-every", type=int, default=1, help="L2T methods: the meta step every k iterations")
    parser.add_argument("--precisions", default="float32", help="float32 and/or mixed bfloat16, float16")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    results = {}
    for precision in args.precisions.split(","):
        with hardware.precision(None if precision == "float32" else precision):
            source = backbones.build("resnet32")
            for method in args.methods.split(","):
                seconds = time_method(method, source, dataset, args)
                results[method] = results.get(method, seconds)  # the first precision's
                print(json.dumps({"precision": precision, **seconds}), flush=True)
    if "scratch" in results and "l2t_ww" in results:
        ratio = results["l2t_ww"]["seconds_per_step"] / results["scratch"]["seconds_per_step"]
        print(json.dumps({"l2t_ww_over_scratch": round(ratio, 2)}))


def time_method(method: str, source, dataset, args) -> dict:
    """Build one method's model (under the current dtype policy) and time its steps."""
    target = backbones.build("vgg9", num_classes=10)
    if method == "plain_keras":
        model = target
        model.compile(
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
    else:
        options = {"meta_every": args.meta_every} if method.startswith("l2t") else {}
        model = L2TModel(source, target, method=method, **options)
        model.compile()
    first, seconds, mean, slowest = seconds_per_step(model, dataset, args.steps)
    return {
        "method": method,
        "batch_size": args.batch_size,
        "first_step_s": round(first, 1),
        "meta_every": args.meta_every if method.startswith("l2t") else None,
        "seconds_per_step": round(seconds, 3),
        "mean_seconds_per_step": round(mean, 3),  # the figure that counts when meta_every > 1
        "slowest_step_s": round(slowest, 3),
    }


if __name__ == "__main__":
    main()
