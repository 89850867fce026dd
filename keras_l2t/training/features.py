"""Frozen backbones, run once: a classic head trained on cached pooled features (the Keras guide's fast path).

A `feature_extraction` model's backbone never changes, so running it over every image in every epoch repeats the
same work. `head_training` computes the backbone's pooled features once per training image (once per augmented
view: `views` passes over the augmented training pipeline, each epoch then takes one of them in a new order) and
once per validation image, and returns a small model of the head's own layers on those features. Training it
trains the full model's head (the layers are shared), which is then whole again for the test pass, for saving and
for the two-phase recipe's fine-tuning.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.datasets import data

__all__ = ["HeadTraining", "frozen_backbone", "head_training", "pooled_outputs"]

HEAD_LAYERS = ("head_dropout", "head_classifier")  # what `strategies` builds above the backbone's pooled output


@dataclasses.dataclass
class HeadTraining:
    """A head to train on cached features, and its data.

    Args:
        model: the head (the full model's own dropout and classifier layers) on pooled features, compiled.
        splits: the run's `data.Data` with `train` and `validation` replaced by batched cached features.
        seconds: the time the backbone passes took.
        views: the augmented views of the training set cached (1 when the data is not augmented).
    """

    model: keras.Model
    splits: data.Data
    seconds: float
    views: int


def frozen_backbone(model: keras.Model) -> keras.Model | None:
    """The classic model's backbone if nothing in it trains (then its features can be cached), else None.

    Args:
        model: a model from `strategies.build`.

    Returns:
        The backbone (a nested `keras.Model`), or None for a matching model or a backbone that trains.
    """
    names = {layer.name for layer in model.layers}
    if not set(HEAD_LAYERS) <= names:
        return None  # not a classic strategy's model
    backbone = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    return backbone if backbone is not None and not backbone.trainable_weights else None


def head_training(model: keras.Model, splits: data.Data, *, views: int, seed: int, batch_size: int) -> HeadTraining:
    """Cache a frozen backbone's pooled features and build the head that trains on them.

    Args:
        model: a compiled classic model whose backbone is frozen (`frozen_backbone(model)` is not None).
        splits: its data.
        views: augmented views of the training set to cache (1 when the data is not augmented).
        seed: orders the cached training features differently in every epoch.
        batch_size: the training batch size (the head's steps per epoch equal the full model's).

    Returns:
        A `HeadTraining`.

    """
    dropout, classifier = (model.get_layer(name) for name in HEAD_LAYERS)
    extractor = keras.Model(model.input, dropout.input, name="pooled_features")
    started = time.time()
    views = views if splits.augmented else 1
    passes = [_features(extractor, splits.train) for _ in range(views)]  # each pass re-augments and reshuffles
    train = _epochs_of_views(np.stack([p[0] for p in passes]), np.stack([p[1] for p in passes]), batch_size, seed)
    validation = None
    if splits.validation is not None:
        features, labels = _features(extractor, splits.validation)
        validation = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1024)
    inputs = keras.Input(dropout.input.shape[1:], name="pooled_features")
    head = keras.Model(inputs, classifier(dropout(inputs)), name=f"{model.name}_head")
    head.compile(
        optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()),
        loss=model.loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    cached = dataclasses.replace(splits, train=train, validation=validation)
    return HeadTraining(head, cached, time.time() - started, views)


def pooled_outputs(extractor: keras.Model, batches: tf.data.Dataset) -> tuple[list[np.ndarray], np.ndarray]:
    """One pass of a frozen extractor over a batched dataset, each output averaged over space.

    Args:
        extractor: a model with one or more outputs (e.g. `backbones.tap_model`), run in inference mode.
        batches: batched (images, labels), already preprocessed.

    Returns:
        (one float32 (N, channels) array per output, in the extractor's order; the (N,) labels).

    """
    outputs, labels = [], []
    for images, batch_labels in batches:
        batch = extractor.predict_on_batch(images)
        batch = batch if isinstance(batch, (list, tuple)) else [batch]
        outputs.append([_pooled(np.asarray(output)) for output in batch])  # per batch: maps can be large
        labels.append(np.asarray(batch_labels))
    return [np.concatenate(chunks) for chunks in zip(*outputs, strict=True)], np.concatenate(labels)


def _pooled(output: np.ndarray) -> np.ndarray:
    """A batch of feature maps (B, H, W, C) averaged over space, as float32 (B, C); vectors are kept."""
    return (output.mean(axis=(1, 2)) if output.ndim == 4 else output).astype("float32")


def _features(extractor: keras.Model, batches: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """One pass of the extractor over a batched dataset: (features, labels)."""
    (features,), labels = pooled_outputs(extractor, batches)
    return features, labels


def _epochs_of_views(features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of batches: a random cached view in a random order, new at each iteration (e.g. `repeat`).

    Args:
        features: (views, images, channels).
        labels: (views, images).
        batch_size: images per batch.
        seed: the seed of the per-epoch view and order.
    """
    views, count = features.shape[:2]
    features, labels = tf.constant(features), tf.constant(labels)

    def epoch(random):
        view = tf.math.floormod(random[0], views)
        order = tf.argsort(tf.random.stateless_uniform([count], seed=random))
        chosen = (tf.gather(features[view], order), tf.gather(labels[view], order))
        return tf.data.Dataset.from_tensor_slices(chosen).batch(batch_size)

    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
    batches = randoms.flat_map(epoch)
    return batches.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size)))
