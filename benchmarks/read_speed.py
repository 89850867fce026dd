"""First-read speed of an image folder of mixed-size PNGs (issue 16: 2,000 images/s or more on 2 cores).

    python benchmarks/read_speed.py --shared ../shared --images 6000

Writes a temporary `<class>/<n>.png` folder of `--images` PNGs of random sizes (15 to 250 px a side) made from the
shared cats-vs-dogs photos (nothing is kept), then reads it as `data.load` does on a first read (the decoded-image
cache off) at `--image-size`, and prints images per second. The folder is written before the clock starts.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from keras_l2t import sources


def write_folder(shared: str, root: str, count: int, seed: int = 0) -> None:
    """`count` PNGs of random sizes in `root/cat` and `root/dog`, from the shared training photos."""
    rng = np.random.default_rng(seed)
    photos = sorted(pathlib.Path(shared, "data/cats_vs_dogs/train").rglob("*.jpg"))
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(15, 251))
        folder = pathlib.Path(root, photo.parent.name)
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(photo) as image:
            image.convert("RGB").resize((side, int(side * rng.uniform(0.8, 1.25)))).save(folder / f"{index}.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_folder(args.shared, root, args.images)
        rates = []
        for _ in range(args.repeats):
            os.sync()
            started = time.perf_counter()
            paths, _, _ = sources.list_image_folder(root)
            images = sources.read_images(paths, args.image_size)
            rates.append(round(len(images) / (time.perf_counter() - started)))
    print(json.dumps({"images": args.images, "image_size": args.image_size, "images_per_second": rates}))


if __name__ == "__main__":
    main()
