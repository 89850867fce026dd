"""Regularised fine-tuning, the classic family's baselines: L2-SP, DELTA and BSS on a Keras classifier.

Each penalty is a plain function of tensors (tested against hand computations), and `RegularizedClassifier` adds
them to the cross-entropy in its `train_step` (the keras.io "customizing fit" pattern), so `fit`, callbacks and
TensorBoard work unchanged. What is kept and exported is `model.network`, the plain classifier.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.training import probe
from keras_l2t.training.features import pooled_outputs

__all__ = [
    "Penalties",
    "RegularizedClassifier",
    "channel_attention",
    "feature_map_penalty",
    "spectral_shrinkage",
    "starting_point_penalty",
]


@dataclasses.dataclass(frozen=True)
class Penalties:
    """The strengths of the penalties a `RegularizedClassifier` adds to its cross-entropy (0 switches one off).

    Args:
        starting_point: L2-SP's alpha, on the backbone's distance to its pretrained weights.
        head: L2-SP's and DELTA's beta, plain L2 on the new head's weights.
        feature_maps: DELTA's alpha, on the backbone's feature maps against the pretrained network's.
        spectral: BSS's eta, on the smallest singular values of the batch's pooled features.
        smallest: BSS's k, how many of the smallest singular values are shrunk.
    """

    starting_point: float = 0.0
    head: float = 0.0
    feature_maps: float = 0.0
    spectral: float = 0.0
    smallest: int = 1


def starting_point_penalty(variables, starting_values, head_variables, alpha: float, beta: float) -> tf.Tensor:
    """L2-SP (Li, Grandvalet and Davoine, ICML 2018, eq. 3): alpha/2 ||w_S - w0_S||^2 + beta/2 ||w_head||^2.

    Args:
        variables: the backbone's trainable weights w_S.
        starting_values: their pretrained values w0_S, in the same order.
        head_variables: the new head's weights (no starting point: plain L2).
        alpha: strength of the pull towards the starting point.
        beta: strength of the head's weight decay.

    Returns:
        A scalar tensor.

    """
    total = tf.constant(0.0)
    for variable, start in zip(variables, starting_values, strict=True):
        total += 0.5 * alpha * tf.reduce_sum(tf.square(tf.cast(variable, "float32") - start))
    for variable in head_variables:
        total += 0.5 * beta * tf.reduce_sum(tf.square(tf.cast(variable, "float32")))
    return total


def feature_map_penalty(maps: tf.Tensor, reference_maps: tf.Tensor, attention: tf.Tensor, alpha: float) -> tf.Tensor:
    """DELTA's behavioural term (Li et al., ICLR 2019, eq. 4-5): attention-weighted feature-map distance.

    alpha/2 * mean over images of sum_c (C a_c) * mean over positions of (FM_c(w, x) - FM_c(w0, x))^2, with
    attention a summing to 1 over the C channels (so uniform attention weighs every channel 1).

    Args:
        maps: (batch, height, width, C) feature maps of the network being trained (or (batch, C) features).
        reference_maps: the same maps of the pretrained network (no gradient flows into them).
        attention: (C,) channel weights summing to 1.
        alpha: the term's strength.

    Returns:
        A scalar tensor.

    """
    maps, reference_maps = tf.cast(maps, "float32"), tf.stop_gradient(tf.cast(reference_maps, "float32"))
    positions = list(range(1, len(maps.shape) - 1))  # none for pooled (batch, C) features
    per_channel = tf.reduce_mean(tf.square(maps - reference_maps), axis=positions)  # (batch, C)
    channels = tf.cast(tf.shape(per_channel)[-1], "float32")
    return 0.5 * alpha * tf.reduce_mean(tf.reduce_sum(per_channel * channels * attention, axis=-1))


def spectral_shrinkage(features: tf.Tensor, eta: float, smallest: int = 1) -> tf.Tensor:
    """BSS (Chen et al., NeurIPS 2019, eq. 7): eta * the sum of the k smallest squared singular values.

    The squared singular values of the batch's (batch, D) feature matrix F are the eigenvalues of F F^T, a
    (batch x batch) symmetric eigenproblem, cheap for D >> batch (when D < batch, its batch - D zeros are skipped).

    Args:
        features: (batch, D) pooled features.
        eta: the penalty's strength.
        smallest: k.

    Returns:
        A scalar tensor.

    """
    features = tf.cast(features, "float32")
    batch, dims = tf.shape(features)[0], tf.shape(features)[1]
    eigenvalues = tf.linalg.eigvalsh(tf.matmul(features, features, transpose_b=True))  # ascending, batch of them
    first = batch - tf.minimum(batch, dims)  # below it: the zeros of a rank-deficient F F^T when D < batch
    return eta * tf.reduce_sum(eigenvalues[first : first + smallest])


def channel_attention(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """DELTA's supervised channel attention (Li et al., ICLR 2019, eq. 6), for the channels a linear head reads.

    The rise of the head's mean cross-entropy when channel c of the pooled pretrained features is set to 0,
    softmax-normalised over channels: a_c = softmax_c(L(x without c) - L(x)).

    Args:
        features: (N, C) pooled features of the pretrained backbone on the training images.
        labels: (N,) integer labels.
        weights: (C, classes) weights of a linear classifier fitted on those features.
        bias: (classes,) its bias.

    Returns:
        (C,) float32 attention summing to 1.

    """
    features, weights = features.astype("float64"), weights.astype("float64")
    logits = features @ weights + bias
    rows = np.arange(len(labels))

    def mean_loss(values):
        shifted = values - values.max(axis=-1, keepdims=True)
        return np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[..., rows, labels], axis=-1)

    # logits without channel c: logits - features[:, c] * weights[c]; one channel at a time, since all at once
    # would take C x N x classes floats (5 GiB for 512 channels over CIFAR-10's 45,000 images)
    base = mean_loss(logits)
    rise = np.array([mean_loss(logits - np.outer(features[:, c], weights[c])) - base for c in range(len(weights))])
    scores = np.exp(rise - rise.max())
    return (scores / scores.sum()).astype("float32")


class RegularizedClassifier(keras.Model):
    """A classic classifier trained with L2-SP, DELTA and/or BSS penalties added to its cross-entropy.

    Args:
        network: the classifier (images -> logits) holding the backbone as a nested model; what is kept.
        backbone: that nested backbone, at its pretrained weights.
        penalties: the strengths (`Penalties`).
        head_layers: names of the network's new head layers (plain L2 with `penalties.head`).
        pooled_input_of: the network's layer whose input is the pooled features (BSS): the head's first layer.
        maps_input_of: the layer whose input is the backbone's feature maps (DELTA): the pooling layer; a backbone
            that returns flat features has none, and its features serve as the maps.
    """

    def __init__(
        self, network, backbone, penalties: Penalties, head_layers, pooled_input_of: str, maps_input_of: str, **kwargs
    ):
        super().__init__(name=f"{network.name}_regularized", **kwargs)
        self.network, self.penalties = network, penalties
        pooled = network.get_layer(pooled_input_of).input
        names = {layer.name for layer in network.layers}
        maps = network.get_layer(maps_input_of).input if maps_input_of in names else pooled  # flat backbones: pooled
        self.outputs_of = keras.Model(network.input, [maps, pooled, network.output])
        self.starting_values = [tf.constant(np.asarray(variable)) for variable in backbone.trainable_weights]
        self.backbone_variables = list(backbone.trainable_weights)
        head = [v for name in head_layers for v in network.get_layer(name).trainable_weights]
        self.head_variables = [v for v in head if len(v.shape) > 1]  # kernels, not biases
        self.reference = None
        if penalties.feature_maps:
            self.reference = keras.models.clone_model(backbone)
            self.reference.set_weights(backbone.get_weights())
            self.reference.trainable = False
        channels = int(maps.shape[-1])
        uniform = keras.initializers.Constant(1.0 / channels)
        self.attention = self.add_weight(shape=(channels,), initializer=uniform, trainable=False, name="attention")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self.prepared = False
        self.built = True  # every part is built already (Keras asks before saving weights)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def prepare(self, batches) -> None:
        """DELTA's channel attention from the training data (Li et al., ICLR 2019, eq. 6); `fit` calls it once.

        The pretrained network's pooled features of every training image, a logistic regression fitted on them
        (`probe.fit_linear_classifier`), and the loss rise without each channel (`channel_attention`).

        Args:
            batches: the training data, batches of (images, labels) (a `tf.data.Dataset` or any iterable).

        """
        self.prepared = True
        if self.reference is None:
            return
        (features,), labels = pooled_outputs(self.reference, batches)
        labels = labels.astype("int64")
        self.attention.assign(channel_attention(features, labels, *probe.fit_linear_classifier(features, labels)))

    def fit(self, x=None, y=None, **kwargs):
        """Keras' `fit`, after DELTA's attention is prepared from one epoch of `x` (and `y`) the first time."""
        if not self.prepared:
            batches = x if y is None else tf.data.Dataset.from_tensor_slices((x, y)).batch(256)
            if isinstance(batches, tf.data.Dataset) and kwargs.get("steps_per_epoch"):
                batches = batches.take(kwargs["steps_per_epoch"])  # a repeated dataset: one epoch of it
            elif isinstance(batches, tf.data.Dataset) and batches.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError("An endless dataset needs steps_per_epoch (DELTA reads one epoch of it first).")
            self.prepare(batches)
        return super().fit(x, y, **kwargs)

    def penalty(self, images, maps, pooled) -> tf.Tensor:
        """The sum of the switched-on penalties for one batch (see the functions of this module)."""
        strengths, total = self.penalties, tf.constant(0.0)
        if strengths.starting_point or strengths.head:
            total += starting_point_penalty(
                self.backbone_variables, self.starting_values, self.head_variables,
                strengths.starting_point, strengths.head,
            )  # fmt: skip
        if strengths.feature_maps:
            reference = self.reference(images, training=False)
            total += feature_map_penalty(maps, reference, self.attention, strengths.feature_maps)
        if strengths.spectral:
            total += spectral_shrinkage(pooled, strengths.spectral, strengths.smallest)
        return total

    def train_step(self, data):
        """One step on cross-entropy plus the penalties (Keras' `compute_loss` weighs `sample_weight`).

        As Keras' own step: Keras' losses come divided by the number of replicas (their gradients are summed), so
        the penalty is too, and a loss-scaling optimizer (`mixed_float16`) gets its scaled loss.
        """
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            maps, pooled, logits = self.outputs_of(images, training=True)
            penalty = self.penalty(images, maps, pooled)
            loss = self.compute_loss(images, labels, logits, sample_weight, training=True) + penalty / replicas
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return self._record(loss * replicas, penalty, images, labels, logits, sample_weight)

    def test_step(self, data):
        """Evaluation: Keras' loss and metrics, plus the penalties at the current weights (as `val_penalty`)."""
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        maps, pooled, logits = self.outputs_of(images, training=False)
        penalty = self.penalty(images, maps, pooled)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = self.compute_loss(images, labels, logits, sample_weight, training=False) * replicas + penalty
        return self._record(loss, penalty, images, labels, logits, sample_weight)

    def _record(self, loss, penalty, images, labels, logits, sample_weight) -> dict:
        for metric in self.metrics:
            if metric.name == "loss":  # Keras' loss tracker reports the total, penalties included
                metric.update_state(loss)
        self.penalty_tracker.update_state(penalty)
        return self.compute_metrics(images, labels, logits, sample_weight)
