"""Does an augmentation destroy classes that differ by a mirror? LeNet-5 from scratch on the letters b, d, p, q.

    python benchmarks/mirror_classes.py --cifar ../shared/data/cifar10 --per-class 1000 --epochs 15

Four classes that are mirror images of each other in pairs (b/d, p/q), like keep-left / keep-right signs: each
image is a letter of random size, position and shade drawn on a real CIFAR-10 photo (32x32). A training
augmentation that flips images left to right makes b and d (and p and q) one class; one that never mirrors
leaves them apart. Prints each augmentation's test accuracy and how often it confuses a letter with its mirror.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import os
import time

import numpy as np

from keras_l2t import data, sources, strategies

LETTERS = ("b", "d", "p", "q")  # b/d and p/q are left-right mirrors


def letters_dataset(folder: str, per_class: int, seed: int) -> tuple:
    """(images, labels): each letter drawn on `per_class` CIFAR-10 photos of `folder`."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    paths, _, _ = sources.list_image_folder(folder)
    backgrounds = sources.read_images([paths[i] for i in rng.choice(len(paths), per_class * len(LETTERS), False)])
    images, labels = [], []
    for index, background in enumerate(backgrounds):
        label = index % len(LETTERS)
        image = Image.fromarray(background)
        font = ImageFont.load_default(size=int(rng.integers(18, 28)))
        shade = (255,) * 3 if background.mean() < 128 else (0,) * 3
        ImageDraw.Draw(image).text((rng.integers(2, 14), rng.integers(-6, 6)), LETTERS[label], fill=shade, font=font)
        images.append(np.asarray(image))
        labels.append(label)
    return np.stack(images), np.asarray(labels, "int64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", default="../shared/data/cifar10")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--augment", default="auto,crop_flip,none")
    args = parser.parse_args()
    train = letters_dataset(os.path.join(args.cifar, "train"), args.per_class, seed=0)
    test = letters_dataset(os.path.join(args.cifar, "test"), args.per_class // 4, seed=1)
    for augment in args.augment.split(","):
        started = time.time()
        splits = data.load(
            {"train": train, "test": test}, backbone="lenet5", validation=0.1, augment=augment, batch_size=64, seed=0
        )
        steps = int(splits.train.cardinality())
        model = strategies.build(
            "scratch", num_classes=len(LETTERS), backbone="lenet5", weights=None, epochs=args.epochs,
            steps_per_epoch=steps,
        )  # fmt: skip
        model.fit(splits.train, validation_data=splits.validation, epochs=args.epochs, verbose=0)
        predicted = np.concatenate([model.predict(x, verbose=0).argmax(1) for x, _ in splits.test])
        truth = np.concatenate([y.numpy() for _, y in splits.test])
        mirror = np.array([1, 0, 3, 2])[truth]  # the label of each image's mirror letter
        print(json.dumps({
            "augment": augment, "transforms": augment.augment_transforms(augment, 32), "epochs": args.epochs,
            "test_accuracy": round(float(np.mean(predicted == truth)), 4),
            "taken_for_its_mirror": round(float(np.mean(predicted == mirror)), 4),
            "seconds": round(time.time() - started, 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
