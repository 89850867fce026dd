"""One `fit` step on one device and under MirroredStrategy on two logical CPU devices, from the same weights.

    python tests/distributed_step.py SHARED [--pairs M:N,...] STRATEGY...
    python tests/distributed_step.py SHARED --run STRATEGY...


Run as its own process (logical devices must be set before TensorFlow starts). Prints one JSON line per strategy:
the largest relative difference, over every trainable variable (target, adapters, meta-networks), between the
variable's change under the 2-replica strategy and its change on one device, on the same 16 real CIFAR-10 images
(the global batch). With --run: `experiment.run` of a 3-epoch run with `devices=1` and with `devices=2`, and the
largest relative difference between their epochs' training losses. In float64: Adam's first step is
lr * g / (|g| + eps), so a meta-gradient element near zero (2 % of them are below 1e-8, see
benchmarks/reference_check.py) takes a full-size step whose sign float32 rounding decides; in float64 every
element's sign is the true one, and the comparison tests the algorithm.
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

from keras_l2t.core import hardware  # noqa: E402
from keras_l2t.datasets import data  # noqa: E402
from keras_l2t.networks import backbones  # noqa: E402
from keras_l2t.running import experiment  # noqa: E402
from keras_l2t.running.config import RunConfig  # noqa: E402
from keras_l2t.training import strategies  # noqa: E402
from keras_l2t.training.l2t import L2TModel  # noqa: E402

BATCH = 16
ROUNDING_FLOOR = 1e-9  # changes below this fraction of the largest are rounding (float64)


def cifar_batch(shared: str):
    """16 real CIFAR-10 training images (two per class of the first eight classes), preprocessed as vgg9's."""
    root = f"{shared}/data/cifar10/train"
    classes = sorted(__import__("os").listdir(root))[:8]
    images, labels = [], []
    for label, name in enumerate(classes):
        for index in range(2):
            images.append(np.asarray(Image.open(f"{root}/{name}/{index:04d}.jpg").convert("RGB"), "float64"))
            labels.append(label)
    return np.asarray(backbones.spec("vgg9").preprocess(np.stack(images))), np.array(labels, "int64")


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


def run_losses(name: str, devices: int, out: str) -> tuple[list[float], int]:
    """The epoch losses of a 3-epoch `experiment.run` on 60 tiny images, and the replicas the model was built with."""
    replicas, build = [], experiment.build_model

    def recording_build(*args):
        replicas.append(tf.distribute.get_strategy().num_replicas_in_sync)
        return build(*args)

    experiment.build_model = recording_build
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (60, 32, 32, 3), dtype="uint8"), np.arange(60) % 3
    keras.utils.set_random_seed(0)  # the pipeline's augmentation seeds, as `experiment.run` sets them
    backbone = "lenet5" if strategies.spec(name).family == "classic" else "vgg9"
    # 40 train, 8 validation, 12 test, in batches that split evenly over 2 replicas (`hardware.distribution`). One
    # training batch per epoch, not augmented: the epoch's loss does not depend on the order of the images in it
    # (Keras' distributed input path shuffles in another order than the 1-device path, with the same seed)
    splits = data.load((images, labels), backbone=backbone, validation=8, test_fraction=0.2, batch_size=40,
                       augment="none")  # fmt: skip
    options = {"source_weights": None} if backbone == "vgg9" else {"backbone": "lenet5", "weights": None}
    config = RunConfig(name, dataset="tiny", epochs=3, devices=devices, out=out, verbose=0, batch_size=40,
                                  augment="none", keep_model=False, **options)  # fmt: skip
    experiment.run(config, splits)
    experiment.build_model = build
    return experiment._read_history(config.paths.history())["loss"], replicas[0]


def compare_runs(names: list[str]) -> None:
    """Print, per strategy, how far the 2-device run's epoch losses are from the 1-device run's."""
    import tempfile

    for name in names:
        with tempfile.TemporaryDirectory() as out:
            (single, one), (mirrored, two) = run_losses(name, 1, out + "/1"), run_losses(name, 2, out + "/2")
        difference = max(abs(b - a) / abs(a) for a, b in zip(single, mirrored, strict=True))
        print(json.dumps({"strategy": name, "replicas": [one, two], "loss_difference": difference,
                          "losses": [single, mirrored]}), flush=True)  # fmt: skip


def main() -> None:
    if sys.argv[2] == "--run":
        compare_runs(sys.argv[3:])
        return
    shared, names, pairs = sys.argv[1], sys.argv[2:], None
    if names and names[0] == "--pairs":
        pairs = [tuple(int(index) for index in pair.split(":")) for pair in names[1].split(",")]
        names = names[2:]
    images, labels = cifar_batch(shared)
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    distribution = hardware.distribution(len(devices))  # one per process: instances share collective keys
    for name in names:
        single = change(name, shared, images, labels, pairs=pairs)
        mirrored = change(name, shared, images, labels, distribution, pairs)
        moved = sum(bool(np.any(delta)) for delta in single)
        print(json.dumps({"strategy": name, "relative_difference": relative_difference(single, mirrored),
                          "variables": len(single), "moved": moved}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
