"""The families' model builders: a classic strategy's backbone with a new head, a matching method's L2TModel.

`strategies.build` picks one by the strategy's family (or the strategy's own `builder`); each takes the strategy,
the number of classes and `build`'s arguments by name, and returns the compiled model.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_l2t.datasets.augment import input_filters
from keras_l2t.networks import backbones
from keras_l2t.training import baselines
from keras_l2t.training.freezing import trainable_layers
from keras_l2t.training.l2t import L2TModel
from keras_l2t.training.optim import TorchSGD
from keras_l2t.training.regularizers import RegularizedClassifier

__all__ = ["classic", "matching", "optimizer"]


def optimizer(learning_rate: float, options: dict) -> keras.optimizers.Optimizer:
    """A classic strategy's optimizer: Adam (AdamW with a weight decay), cosine-decayed over the run, after a warm-up.

    Args:
        learning_rate: the starting (after warm-up: the peak) rate.
        options: `strategies.build`'s arguments by name (epochs, steps_per_epoch, warmup_epochs, weight_decay).

    Returns:
        The optimizer.

    """
    epochs, steps = options["epochs"], options["steps_per_epoch"]
    if epochs and steps:
        warmup = min(options["warmup_epochs"], epochs - 1) * steps
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate, epochs * steps - warmup, warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )  # fmt: skip
    if options["weight_decay"] is None:
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.AdamW(learning_rate, weight_decay=options["weight_decay"])


def classic(strategy, num_classes: int, options: dict) -> keras.Model:
    """Build a classic strategy's model: its backbone (frozen as it says), pooling, dropout and a new head.

    Args:
        strategy: its `strategies.Strategy` (trainable layers, pretrained or not, penalties).
        num_classes: classes of the task.
        options: `strategies.build`'s arguments by name.

    Returns:
        The compiled model (a `RegularizedClassifier` when the strategy has penalties).

    """
    backbone = options["backbone"]
    if backbone is None:
        raise ValueError(f"{strategy.name} needs a backbone; registered backbones: {', '.join(backbones.names())}.")
    weights = options["weights"] if strategy.pretrained else None
    shape = options["input_shape"]
    if options["grayscale"]:  # the network sees one channel; the model still takes the data's RGB images
        shape = shape or (backbones.spec(backbone).default_size,) * 2 + (3,)
        if strategy.pretrained and weights is not None:
            raise ValueError(
                f"grayscale feeds {backbone} one channel; its {weights} weights take 3: use it with a "
                "network trained from random initialisation (scratch), or drop grayscale."
            )
    base = backbones.build(
        backbone, weights=weights, input_shape=shape and (*shape[:2], 1 if options["grayscale"] else 3)
    )
    inference_batch_norm = strategy.pretrained and not options["train_batch_norm"]
    trainable_layers(base, strategy.trainable, options["last_blocks"], freeze_batch_norm=inference_batch_norm)
    inputs = keras.Input((*base.input_shape[1:3], 3), name="images")
    value_range = _value_range(backbones.spec(backbone).preprocess)
    features = base(input_filters(inputs, options["grayscale"], options["equalize"], value_range))
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features) if len(features.shape) == 4 else features
    dropped = keras.layers.Dropout(options["dropout"], name="head_dropout")(pooled)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=options["head_init"], name="head_classifier")(dropped)
    model = keras.Model(inputs, outputs, name=f"{strategy.name}_{backbone}")
    if strategy.penalties is not None:  # trains through its own train_step; `model.network` is what is kept
        model = RegularizedClassifier(model, base, strategy.penalties, ["head_classifier"], "head_dropout", "head_pool")
    model.compile(
        optimizer=options["optimizer"] or optimizer(options["learning_rate"] or strategy.learning_rate, options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def _value_range(preprocess) -> tuple[float, float]:
    """The range of preprocessed pixel values: the preprocessing applied to black and white."""
    ends = np.asarray(preprocess(np.array([[[[0.0] * 3, [255.0] * 3]]], "float32")))
    return float(ends.min()), float(ends.max())


def matching(strategy, num_classes: int, options: dict) -> keras.Model:
    """Build a matching method's `L2TModel`: the pretrained source, the target with its head, PyTorch-style SGD.

    Args:
        strategy: its `strategies.Strategy` (the method's name).
        num_classes: classes of the task.
        options: `strategies.build`'s arguments by name.

    Returns:
        The compiled `L2TModel`.

    """
    if options["target"] is None:
        raise ValueError(f"{strategy.name} needs a target backbone (target='vgg9', for instance).")
    source = backbones.build(
        options["source"],
        weights=options["source_weights"],
        input_shape=options["input_shape"],
        num_classes=baselines.old_task_classes(strategy.name),
    )  # LwF: the source's classifier
    target = backbones.build(
        options["target"], weights=None, input_shape=options["input_shape"], num_classes=num_classes
    )
    matching = dict(options["matching"])
    if options["matching_weight"] is not None:
        matching["beta"] = options["matching_weight"]
    model = L2TModel(source, target, method=strategy.name, **matching)
    rate = options["learning_rate"] or strategy.learning_rate
    decay = {} if options["weight_decay"] is None else {"coupled_weight_decay": options["weight_decay"]}
    model.compile(optimizer=options["optimizer"] or TorchSGD(rate, **decay))
    return model
