"""One `fit` step on one device and under MirroredStrategy on two logical CPU devices, from the same weights.

    python tests/distributed_step.py SHARED [--pairs M:N,...] STRATEGY...

Run as its own process (logical devices must be set before TensorFlow starts). Prints one JSON line per strategy:
the largest relative difference, over every trainable variable (target, adapters, meta-networks), between the
variable's change under the 2-replica strategy and its change on one device, on the same 16 real CIFAR-10 images
(the global batch). In float64: Adam's first step is lr * g / (|g| + eps), so a meta-gradient element near
zero (2 % of them are below 1e-8, see benchmarks/reference_check.py) takes a full-size step whose sign float32
rounding decides; in float64 every element's sign is the true one, and the comparison tests the algorithm.
"""

import json
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")
from PIL import Image  # noqa: E402

from keras_l2t import strategies  # noqa: E402
from keras_l2t.l2t import L2TModel  # noqa: E402

BATCH = 16
ROUNDING_FLOOR = 1e-9  # changes below this fraction of the largest are rounding (float64)


def cifar_batch(shared: str):
    """16 real CIFAR-10 training images (two per class of the first eight classes), as floats in [0, 255]."""
    root = f"{shared}/data/cifar10/train"
    classes = sorted(__import__("os").listdir(root))[:8]
    images, labels = [], []
    for label, name in enumerate(classes):
        for index in range(2):
            images.append(np.asarray(Image.open(f"{root}/{name}/{index:04d}.jpg").convert("RGB"), "float64"))
            labels.append(label)
    return np.stack(images), np.array(labels, "int64")


def build(name: str, shared: str, pairs=None) -> keras.Model:
    """A model of the strategy, seeded (the same initial weights every call); `pairs` narrows the matched pairs."""
    keras.utils.set_random_seed(0)
    options = {"pairs": pairs} if pairs and name not in ("scratch",) else {}
    if strategies.spec(name).family == "classic" and name != "scratch":
        return strategies.build(name, num_classes=10, backbone="lenet5", weights=None, input_shape=(32, 32, 3),
                                dropout=0.0)  # fmt: skip
    source = f"{shared}/weights/resnet32_tinyimagenet_l2tww.pth.tar"
    return strategies.build(name, num_classes=10, family="matching", target="vgg9", source_weights=source,
                            input_shape=(32, 32, 3), **options)  # fmt: skip


def trained_variables(model: keras.Model) -> list:
    if isinstance(model, L2TModel):
        return model.theta + model.phi
    return model.trainable_variables


def change(name: str, shared: str, images, labels, distribution=None, pairs=None) -> list[np.ndarray]:
    """Each trainable variable's change after one fit step on the batch, optionally under a strategy."""
    scope = distribution.scope() if distribution else tf.distribute.get_strategy().scope()
    with scope:
        model = build(name, shared, pairs)
    variables = trained_variables(model)
    before = [np.array(variable.numpy(), "float64") for variable in variables]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    return [np.array(variable.numpy(), "float64") - start for variable, start in zip(variables, before, strict=True)]


def relative_difference(single: list, mirrored: list) -> float:
    """max over variables of ||mirrored change - single change|| / ||single change||.

    A variable whose change is below ROUNDING_FLOOR of the largest variable change moved by rounding only (its
    gradient is zero in exact arithmetic: a convolution's bias before BatchNorm, whose mean removes it); its
    difference is measured against the largest change instead.
    """
    largest = max(np.linalg.norm(delta) for delta in single)
    worst = 0.0
    for one, two in zip(single, mirrored, strict=True):
        scale = max(np.linalg.norm(one), ROUNDING_FLOOR * largest)
        worst = max(worst, float(np.linalg.norm(two - one) / scale))
    return worst


def main() -> None:
    shared, names, pairs = sys.argv[1], sys.argv[2:], None
    if names and names[0] == "--pairs":
        pairs = [tuple(int(index) for index in pair.split(":")) for pair in names[1].split(",")]
        names = names[2:]
    images, labels = cifar_batch(shared)
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    distribution = tf.distribute.MirroredStrategy(devices)  # one per process: instances share collective keys
    for name in names:
        single = change(name, shared, images, labels, pairs=pairs)
        mirrored = change(name, shared, images, labels, distribution, pairs)
        moved = sum(bool(np.any(delta)) for delta in single)
        print(json.dumps({"strategy": name, "relative_difference": relative_difference(single, mirrored),
                          "variables": len(single), "moved": moved}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
