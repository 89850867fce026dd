"""Cross-check L2TModel's L2T-ww train_step against the authors' PyTorch code, step by step, in float64.

    git clone https://github.com/alinlab/L2T-ww ../L2T-ww && pip install torch  # torch is not our dependency
    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/reference_check.py --reference ../L2T-ww \\
        --cifar ../shared/data/cifar10/train

Both sides start from the same weights (the PyTorch target is built from the Keras one) and see the same real
CIFAR-10 batches and the same source maps (the source is frozen, so its maps are computed once, by Keras, and
fed to both). The PyTorch side imports the reference's own `MetaSGD` (train/meta_optimizers.py) and its
`FeatureMatching`, `WeightNetwork` and `LossWeightNetwork` (train_l2t_ww.py; its data and model helpers are
stubbed), and runs the reference's loop body: a real step on CE + L_wfm, T = 2 look-ahead steps on L_wfm, one on
CE, then `meta_backward` and the meta optimizer. The reference predates PyTorch 2's `zero_grad(set_to_none=True)`,
under which a parameter without a gradient (the classifier, in a matching-only step) has `grad = None`: its
`meta_backward` then fails (`--torch2-zero-grad` shows it); the default keeps PyTorch 1.x's zeroing, which the
code was written for.

Prints, per step, the largest relative difference of the target weights, the meta-network weights and the
BatchNorm moving means; with `--meta-sgd`, the meta optimizer is SGD(1) without decay on both sides, so that the
applied meta move is the hypergradient itself; with `--keras-adam`, our meta optimizer is Keras' Adam instead of
`TorchAdam` (whose epsilon differs, see `keras_l2t.optim.TorchAdam`).

With `--time STEPS` it times instead, in float32 at `--batch-size` (use 128): seconds per iteration of the
reference's loop body and of a plain PyTorch SGD step of the same vgg9 on cross-entropy, each after one warm-up
iteration (compare with `benchmarks/step_time.py`). The source maps are precomputed here, so the reference's
figure leaves out the five no-grad resnet32 forwards that its `inner_objective` runs per iteration.
"""

from keras_l2t import process

process.configure()  # oneDNN on, before TensorFlow loads (see keras_l2t.process)

import argparse
import os
import sys
import time
import types
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_l2t import backbones, sources
from keras_l2t.catalog import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.l2t import L2TModel
from keras_l2t.nets import VGG9_LAYOUT
from keras_l2t.optim import TorchSGD

SOURCE_STAGE_ENDS = (4, 9, 14)  # resnet32's 15 block outputs in the reference; ours taps the stage ends


def numpy(value) -> np.ndarray:
    """A Keras variable or tensor as a NumPy array."""
    return keras.ops.convert_to_numpy(value)


def import_reference(folder: str, torch2_zero_grad: bool):
    """The reference's MetaSGD and matching classes (train_l2t_ww.py's data / model helpers stubbed)."""
    sys.path.insert(0, folder)
    for name, attributes in {"check_dataset": ["check_dataset"], "check_model": ["check_model"]}.items():
        sys.modules[name] = types.SimpleNamespace(**dict.fromkeys(attributes))
    sys.modules["utils"] = types.ModuleType("utils")
    sys.modules["utils.utils"] = types.SimpleNamespace(AverageMeter=None, accuracy=None, set_logging_config=None)
    import train_l2t_ww as reference
    from train.meta_optimizers import MetaSGD

    class MetaSGDTorch1(MetaSGD):
        def zero_grad(self, set_to_none: bool = torch2_zero_grad):
            super().zero_grad(set_to_none=set_to_none)

    return reference, MetaSGDTorch1


def cifar_batches(folder: str, batch: int, steps: int) -> list:
    """`steps` batches of real images (the first of each class, shuffled), normalised as vgg9 expects."""
    paths, labels, _ = sources.list_image_folder(folder)
    per_class = -(-batch * steps // 10)
    chosen = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in range(10)])
    chosen = np.random.default_rng(0).permutation(chosen)[: batch * steps]
    images = (sources.read_images([paths[i] for i in chosen]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return [(images[i : i + batch], labels[chosen][i : i + batch]) for i in range(0, batch * steps, batch)]


def torch_vgg9(target: keras.Model):
    """The reference's VGG_small('B') with BatchNorm, as forward_with_features, holding the Keras weights."""
    import torch
    from torch import nn

    layers, channels, index = [], 3, 0
    for item in VGG9_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        index += 1
        conv = nn.Conv2d(channels, item, 3, padding=1)
        conv.weight.data = torch.tensor(numpy(target.get_layer(f"conv{index}").kernel).transpose(3, 2, 0, 1))
        conv.bias.data = torch.tensor(numpy(target.get_layer(f"conv{index}").bias))
        layers += [conv, nn.BatchNorm2d(item), nn.ReLU()]
        channels = item

    class VGG9(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.classifier = nn.Sequential(*layers), nn.Linear(512, 10)
            self.classifier.weight.data = torch.tensor(numpy(target.get_layer("classifier").kernel).T.copy())
            self.classifier.bias.data = torch.tensor(numpy(target.get_layer("classifier").bias))

        def forward(self, x):
            taps = []
            for layer in self.features:
                if isinstance(layer, nn.MaxPool2d):
                    taps.append(x)
                x = layer(x)
            return self.classifier(torch.flatten(x, 1)), taps

    return VGG9()


def keras_model(meta_sgd: bool, keras_adam: bool) -> L2TModel:
    """L2T-ww with the shared Tiny-ImageNet resnet32 source and a fresh vgg9 target (seed 0)."""
    keras.utils.set_random_seed(0)
    source = backbones.build("resnet32", weights="tinyimagenet", input_shape=(32, 32, 3))
    target = backbones.build("vgg9", weights=None, input_shape=(32, 32, 3), num_classes=10)
    model = L2TModel(source, target, method="l2t_ww", meta_weight_decay=0.0 if meta_sgd else 1e-4)
    meta = keras.optimizers.SGD(1.0) if meta_sgd else None  # None: L2TModel's default, TorchAdam(1e-4)
    if keras_adam:
        meta = keras.optimizers.Adam(1e-4, epsilon=1e-8)
    model.compile(optimizer=TorchSGD(0.1), meta_optimizer=meta)
    return model


class ReferenceSide:
    """The reference's networks and optimizers, holding the Keras model's initial weights.

    Args:
        model: the Keras L2TModel (its target, adapters and meta-networks are copied).
        reference: the imported train_l2t_ww module.
        meta_sgd_class: the reference's MetaSGD (see `import_reference`).
        meta_sgd: use SGD(1) without decay as the meta optimizer instead of the reference's Adam.
    """

    def __init__(self, model: L2TModel, reference, meta_sgd_class, meta_sgd: bool):
        import torch

        self.torch, self.pairs = torch, [(SOURCE_STAGE_ENDS[m], n) for m, n in model.pairs]
        self.target = torch_vgg9(model.target)
        self.branch = reference.FeatureMatching("resnet32", "vgg9", self.pairs)
        self.what = reference.WeightNetwork("resnet32", self.pairs)
        self.where = reference.LossWeightNetwork("resnet32", self.pairs, "relu6", 1.0)
        for index in range(len(self.pairs)):
            kernel = numpy(model.adapters[index].kernel).T[:, :, None, None]
            self.branch[index].weight.data = torch.tensor(kernel.copy())
            self.branch[index].bias.data = torch.tensor(numpy(model.adapters[index].bias))
            self.where[index].weight.data = torch.tensor(numpy(model.where[index].kernel).T.copy())
            self.where[index].bias.data = torch.tensor(numpy(model.where[index].bias))
        phi = list(self.what.parameters()) + list(self.where.parameters())
        self.meta_optimizer = (
            torch.optim.SGD(phi, lr=1.0) if meta_sgd else torch.optim.Adam(phi, lr=1e-4, weight_decay=1e-4)
        )
        theta = list(self.target.parameters()) + list(self.branch.parameters())
        self.optimizer = meta_sgd_class(
            theta, [self.target, self.branch], lr=0.1, momentum=0.9, weight_decay=1e-4, rollback=True
        )

    def step(self, images, labels, source_maps) -> None:
        """One iteration of the body of train_l2t_ww.py's training loop (meta_period 1, T = 2)."""
        torch, functional = self.torch, self.torch.nn.functional
        x, y = torch.tensor(images.transpose(0, 3, 1, 2).copy()), torch.tensor(labels).long()
        features = [None] * 15
        for index, source_map in zip(SOURCE_STAGE_ENDS, source_maps, strict=True):
            features[index] = torch.tensor(numpy(source_map).transpose(0, 3, 1, 2).copy())

        def inner_objective(matching_only=False):
            logits, taps = self.target(x)
            weights, loss_weights = self.what(features), self.where(features)
            matching = self.branch(features, taps, weights, [0.5] * len(self.pairs), loss_weights)
            return matching if matching_only else functional.cross_entropy(logits, y) + matching

        def outer_objective():
            return functional.cross_entropy(self.target(x)[0], y)

        optimizer = self.optimizer
        optimizer.zero_grad()
        inner_objective().backward()
        optimizer.step(None)
        for _ in range(2):
            optimizer.zero_grad()
            optimizer.step(inner_objective, True)
        optimizer.zero_grad()
        optimizer.step(outer_objective)
        optimizer.zero_grad()
        self.meta_optimizer.zero_grad()
        outer_objective().backward()
        optimizer.meta_backward()
        self.meta_optimizer.step()


def relative(ours: list, theirs: list) -> float:
    """max |ours - theirs| / max |theirs| over a list of arrays."""
    largest = max(float(np.abs(b).max()) for b in theirs)
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True)) / largest


def differences(model: L2TModel, side: ReferenceSide, start: list) -> dict:
    """Relative differences of target weights, meta weights, meta moves and BatchNorm moving means."""
    convs = [layer for layer in side.target.features if isinstance(layer, side.torch.nn.Conv2d)]
    norms = [layer for layer in side.target.features if isinstance(layer, side.torch.nn.BatchNorm2d)]
    keras_convs = [numpy(model.target.get_layer(f"conv{i + 1}").kernel) for i in range(len(convs))]
    torch_convs = [layer.weight.detach().numpy().transpose(2, 3, 1, 0) for layer in convs]
    keras_meta = [numpy(layer.kernel) for layer in model.what + model.where]
    torch_meta = [layer.weight.detach().numpy().T for layer in list(side.what) + list(side.where)]
    keras_moves = [ours - first for ours, first in zip(keras_meta, start, strict=True)]
    torch_moves = [theirs - first for theirs, first in zip(torch_meta, start, strict=True)]
    moving = [numpy(model.target.get_layer(f"bn{i + 1}").moving_mean) for i in range(len(norms))]
    return {
        "target kernels": relative(keras_convs, torch_convs),
        "meta kernels": relative(keras_meta, torch_meta),
        "meta moves": relative(keras_moves, torch_moves),
        "BN moving means": relative(moving, [layer.running_mean.numpy() for layer in norms]),
    }


def with_reference_extra_update(model: L2TModel, images) -> list:
    """Our BN moving means after one more training-mode forward at the current weights.

    The reference's meta_backward re-evaluates the first look-ahead objective after restoring the state after
    the real step, and with rollback=True keeps the BatchNorm update of that forward.
    """
    _, _, statistics = model._forward([variable.value for variable in model.theta], tf.constant(images))
    variables = model.target_features.non_trainable_variables
    return [numpy(s) for v, s in zip(variables, statistics, strict=True) if v.path.endswith("moving_mean")]


def seconds_per_call(function, steps: int) -> float:
    """Mean seconds of `steps` calls of `function` after one warm-up call."""
    function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps


def time_reference(side: ReferenceSide, images, labels, source_maps, steps: int) -> None:
    """Print seconds per reference iteration and per plain PyTorch SGD step of its vgg9 (cross-entropy)."""
    torch = side.torch
    x, y = torch.tensor(images.transpose(0, 3, 1, 2).copy()), torch.tensor(labels).long()
    plain = torch.optim.SGD(side.target.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def plain_step():
        plain.zero_grad()
        torch.nn.functional.cross_entropy(side.target(x)[0], y).backward()
        plain.step()

    figures = {
        "reference L2T-ww iteration": seconds_per_call(lambda: side.step(images, labels, source_maps), steps),
        "PyTorch plain vgg9 step": seconds_per_call(plain_step, steps),
    }
    threads = torch.get_num_threads()
    for key, value in figures.items():
        print(f"{key}: {value:.2f} s (batch {len(images)}, {threads} threads, {steps} steps)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="a clone of https://github.com/alinlab/L2T-ww")
    parser.add_argument("--cifar", default="../shared/data/cifar10/train", help="a <class>/<image> folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--meta-sgd", action="store_true", help="meta optimizer SGD(1): moves = hypergradients")
    parser.add_argument("--keras-adam", action="store_true", help="Keras' Adam as our meta optimizer")
    parser.add_argument("--torch2-zero-grad", action="store_true", help="PyTorch 2's zero_grad(set_to_none=True)")
    parser.add_argument("--time", type=int, default=0, metavar="STEPS", help="time the reference (float32)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.reference, "train", "meta_optimizers.py")):
        parser.error(f"{args.reference!r} is not a clone of alinlab/L2T-ww (no train/meta_optimizers.py)")
    import torch

    warnings.filterwarnings("ignore", message="This overload of add_ is deprecated")  # the reference's MetaSGD
    if not args.time:
        torch.set_default_dtype(torch.float64)
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
    reference, meta_sgd_class = import_reference(args.reference, args.torch2_zero_grad)
    model = keras_model(args.meta_sgd, args.keras_adam)
    side = ReferenceSide(model, reference, meta_sgd_class, args.meta_sgd)
    if args.time:
        images, labels = cifar_batches(args.cifar, args.batch_size, 1)[0]
        images = images.astype("float32")
        time_reference(side, images, labels, model.source_features(tf.constant(images), training=False), args.time)
        return
    start = [numpy(layer.kernel) for layer in model.what + model.where]
    for step, (images, labels) in enumerate(cifar_batches(args.cifar, args.batch_size, args.steps), 1):
        source_maps = model.source_features(tf.constant(images), training=False)
        model.train_on_batch(images, labels)
        try:
            side.step(images, labels, source_maps)
        except AttributeError as error:  # p.grad is None in meta_backward
            if not args.torch2_zero_grad:
                raise
            sys.exit(f"The reference's meta_backward fails under PyTorch 2's zero_grad(set_to_none=True): {error}")
        found = differences(model, side, start)
        print(f"step {step}: " + ", ".join(f"{key} {value:.1e}" for key, value in found.items()), flush=True)
        if step == 1:
            norms = [layer for layer in side.target.features if isinstance(layer, torch.nn.BatchNorm2d)]
            extra = relative(with_reference_extra_update(model, images), [n.running_mean.numpy() for n in norms])
            print(f"  BN moving means with the reference's second update applied to ours: {extra:.1e}", flush=True)
            if args.meta_sgd:  # the moves are the hypergradient's elements
                moves = np.abs(
                    np.concatenate(
                        [
                            (numpy(layer.kernel) - first).ravel()
                            for layer, first in zip(model.what + model.where, start, strict=True)
                        ]
                    )
                )
                shares = ", ".join(f"{np.mean(moves < bound):.0%} below {bound:g}" for bound in (1e-8, 1e-7, 1e-6))
                print(f"  hypergradient elements (meta kernels): largest {moves.max():.1e}; {shares}", flush=True)


if __name__ == "__main__":
    main()
