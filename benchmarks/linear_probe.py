"""Linear probe on frozen pooled features: pretrained vs random weights (issue 2's acceptance check).

python benchmarks/linear_probe.py --shared ../shared
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import json
import time

from keras_l2t import probe

PRETRAINED = {
    "mobilenet_v2": "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
    "squeezenet1_1": "weights/squeezenet_v1.1_imagenet_notop.h5",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared", help="the shared data and weights folder")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbones", default=",".join(PRETRAINED))
    args = parser.parse_args()
    for backbone in args.backbones.split(","):
        for weights in (f"{args.shared}/{PRETRAINED[backbone]}", None):
            start = time.time()
            result = probe.linear_probe(
                backbone,
                weights,
                f"{args.shared}/data/cats_vs_dogs/train",
                f"{args.shared}/data/cats_vs_dogs/test",
                args.image_size,
            )
            result["seconds"] = round(time.time() - start, 1)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
