"""Which layers of a classic model train: freezing a backbone's blocks, and the second phase of the Keras recipe.

`keras_l2t.training.strategies` builds models with these and re-exports both (`strategies.unfreeze` is the public name).
"""

from __future__ import annotations

import keras

from keras_l2t.networks import backbones

__all__ = ["trainable_layers", "unfreeze"]


def trainable_layers(model: keras.Model, trainable: str, last_blocks: int = 2, freeze_batch_norm: bool = True) -> None:
    """Set which layers of a backbone train.

    Keras 3 runs a BatchNormalization layer in inference mode exactly when it is not trainable. Calling the
    backbone with `training=False` inside a functional model is *not* enough: `fit` passes `training=True`
    down to every nested layer and overrides it (keras-team/keras#20285), so the moving statistics drift.
    Freezing the BatchNorm layers is what keeps them in inference mode (their gamma and beta stay too).

    Args:
        model: a backbone from `backbones.build` (its name is its registry name).
        trainable: "none", "last" (only the last `last_blocks` blocks of `backbones.blocks(model)`) or "all".
        last_blocks: N for "last".
        freeze_batch_norm: keep every BatchNormalization layer frozen, hence in inference mode.

    """
    model.trainable = trainable != "none"
    if trainable == "last":
        groups = backbones.blocks(model)
        if not 1 <= last_blocks <= len(groups):
            raise ValueError(f"{model.name} has {len(groups)} blocks; last_blocks must be 1..{len(groups)}.")
        keep = {name for group in groups[-last_blocks:] for name in group}
        for layer in model.layers:
            layer.trainable = layer.name in keep
    if freeze_batch_norm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def unfreeze(
    model: keras.Model, *, last_blocks: int | None = None, learning_rate: float = 1e-5, train_batch_norm: bool = False
) -> keras.Model:
    """Phase two of the Keras transfer-learning recipe: make the backbone trainable and recompile.

    BatchNorm layers stay frozen, hence in inference mode (see `trainable_layers`), unless asked otherwise.

    Args:
        model: a classic strategy's model (e.g. after training with `feature_extraction`).
        last_blocks: unfreeze only the last N blocks; None unfreezes every layer.
        learning_rate: the (low) rate of the fine-tuning phase.
        train_batch_norm: let BatchNorm layers train (batch statistics) too.

    Returns:
        The same model, recompiled with Adam at `learning_rate`.

    """
    network = getattr(model, "network", model)  # a RegularizedClassifier trains its network
    base = next(layer for layer in network.layers if isinstance(layer, keras.Model))
    trainable_layers(base, "all" if last_blocks is None else "last", last_blocks or 0, not train_batch_norm)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model
