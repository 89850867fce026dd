"""A short real-data run of the feature-matching methods: CIFAR-10 (shared JPEG copy), N images per class.

    python benchmarks/l2t_smoke.py --shared ../shared --per-class 10 --epochs 30 --methods scratch,l2t_ww

Not the thesis protocol (200 epochs, 5+ seeds: see issue 4); a quick check that every method trains on
real data with the reference schedule, printing test accuracy on all 10,000 test images.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

from keras_l2t import backbones, sources
from keras_l2t.l2t import L2TModel
from keras_l2t.optim import reference_cosine


def sample_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)])
    )


def augment(images, labels):
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    cropped = tf.map_fn(lambda image: tf.image.random_crop(image, (32, 32, 3)), padded)
    return tf.image.random_flip_left_right(cropped), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="scratch,ufm,fm_uniform,l2t_ww,l2t_www")
    args = parser.parse_args()
    preprocess = backbones.spec("resnet32").preprocess
    paths, labels, _ = sources.list_image_folder(f"{args.shared}/data/cifar10/train")
    chosen = sample_per_class(labels, args.per_class, args.seed)
    train_x = np.asarray(preprocess(sources.read_images([paths[i] for i in chosen])))
    train_y = labels[chosen]
    test_paths, test_y, _ = sources.list_image_folder(f"{args.shared}/data/cifar10/test")
    test_x = np.asarray(preprocess(sources.read_images(test_paths)))
    source = backbones.build("resnet32", weights=f"{args.shared}/weights/resnet32_tinyimagenet_l2tww_state_dict.npz")
    for method in args.methods.split(","):
        keras.utils.set_random_seed(args.seed)
        model = L2TModel(source, backbones.build("vgg9", num_classes=10), method=method)
        model.compile()
        train = (
            tf.data.Dataset.from_tensor_slices((train_x, train_y))
            .shuffle(len(train_y), seed=args.seed)
            .batch(128)
            .map(augment)
            .prefetch(2)
        )
        start = time.time()
        history = model.fit(
            train,
            epochs=args.epochs,
            verbose=0,
            callbacks=[keras.callbacks.LearningRateScheduler(reference_cosine(args.epochs))],
        )
        seconds = time.time() - start
        _, accuracy = model.evaluate(test_x, test_y, batch_size=500, verbose=0)
        print(
            json.dumps(
                {
                    "method": method,
                    "per_class": args.per_class,
                    "epochs": args.epochs,
                    "seed": args.seed,
                    "train_accuracy": round(history.history["accuracy"][-1], 4),
                    "test_accuracy": round(float(accuracy), 4),
                    "train_seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
