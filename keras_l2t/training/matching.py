"""Feature matching pieces of L2T-ww / L2T-www: pairs, adapters, the what/where/which meta-networks, losses.

Jang et al., "Learning What and Where to Transfer", ICML 2019 (L2T-ww), Section 3; L2T-www adds a third
meta-network for *which pixels* to transfer. Everything here is a plain function of tensors, so that
`keras_l2t.training.l2t.L2TModel` can differentiate it to second order.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.core import keras_internals

# softplus(x) = 1 at x = log(e - 1): the which network starts with gamma = 1 everywhere, i.e. as L2T-ww.
SOFTPLUS_ONE = math.log(math.e - 1.0)
WHICH_GRID = 3


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out, in) matrix of 1-D bilinear resizing with half-pixel centres and no antialiasing.

    Equal to `tf.image.resize(..., "bilinear", antialias=False)` and PyTorch's `F.interpolate(...,
    mode="bilinear", align_corners=False)`, but usable in any float dtype (TF's resize computes in float32).

    Args:
        in_size: the input length.
        out_size: the output length.

    Returns:
        A float64 array of shape (out_size, in_size) whose rows sum to 1.

    """
    matrix = np.zeros((out_size, in_size))
    for index in range(out_size):
        position = (index + 0.5) * in_size / out_size - 0.5
        lower = math.floor(position)
        fraction = position - lower
        matrix[index, min(max(lower, 0), in_size - 1)] += 1.0 - fraction
        matrix[index, min(max(lower + 1, 0), in_size - 1)] += fraction
    return matrix


def average_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out, in) matrix of 1-D adaptive average pooling (PyTorch's `AdaptiveAvgPool` windows).

    Args:
        in_size: the input length.
        out_size: the output length.

    Returns:
        A float64 array of shape (out_size, in_size) whose rows sum to 1.

    """
    matrix = np.zeros((out_size, in_size))
    for index in range(out_size):
        start, end = (index * in_size) // out_size, -((-(index + 1) * in_size) // out_size)
        matrix[index, start:end] = 1.0 / (end - start)
    return matrix


def resize(maps, size, matrix=bilinear_matrix):
    """Resize (B, H, W, C) maps to (B, size[0], size[1], C) with separable matrices, keeping the dtype.

    Args:
        maps: the feature maps (static H and W).
        size: (height, width) of the output.
        matrix: `bilinear_matrix` or `average_matrix`.

    Returns:
        The resized maps.

    """
    height, width = maps.shape[1], maps.shape[2]
    if (height, width) == tuple(size):
        return maps
    rows = tf.constant(matrix(height, size[0]), maps.dtype)
    columns = tf.constant(matrix(width, size[1]), maps.dtype)
    return tf.einsum("oh,bhwc,pw->bopc", rows, maps, columns)


def all_pairs(source_taps: int, target_taps: int) -> list[tuple[int, int]]:
    """Every (source tap, target tap) pair, the L2T-ww default (3 x 5 = 15 pairs).

    Args:
        source_taps: number of source feature maps.
        target_taps: number of target feature maps.

    Returns:
        (m, n) index pairs, source-major.

    """
    return [(m, n) for m in range(source_taps) for n in range(target_taps)]


def torch_uniform(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default initialiser for Linear/Conv weights and biases: uniform in +-1/sqrt(fan_in).

    Args:
        fan_in: the layer's input size (channels x kernel area).

    Returns:
        A Keras initializer.

    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def matching_dtype() -> str:
    """The dtype of adapters, meta-networks and matching maps: the global policy's variable dtype.

    Under a mixed policy ("mixed_bfloat16", "mixed_float16") the networks compute in 16 bits, but the taps are
    cast to float32 before adapters and losses, and these small layers compute in float32 (one rule for all).
    """
    return keras.config.dtype_policy().variable_dtype


def _built_dense(inputs: int, units: int, kernel_initializer, bias_initializer, name: str) -> keras.layers.Dense:
    layer = keras.layers.Dense(
        units,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        name=name,
        dtype=matching_dtype(),
    )
    layer.build((None, inputs))
    return layer


def make_adapter(target_channels: int, source_channels: int, name: str) -> keras.layers.Dense:
    """The adapter r of a pair: a 1x1 convolution with bias, target channels -> source channels.

    A Dense layer on the channel axis is a 1x1 convolution; initialised as PyTorch's Conv2d.

    Args:
        target_channels: C_t.
        source_channels: C_s.
        name: the layer's name.

    Returns:
        A built Dense layer.

    """
    # two initializers: one instance would draw the bias as the kernel's first values (same seed)
    return _built_dense(
        target_channels, source_channels, torch_uniform(target_channels), torch_uniform(target_channels), name
    )


def make_what(source_channels: int, name: str) -> keras.layers.Dense:
    """The what network f of a pair: Dense(C_s -> C_s), zero-initialised (uniform channel weights at start).

    Args:
        source_channels: C_s.
        name: the layer's name.

    Returns:
        A built Dense layer; `softmax(f(pooled source))` gives w.

    """
    return _built_dense(source_channels, source_channels, "zeros", "zeros", name)


def make_where(source_channels: int, name: str) -> keras.layers.Dense:
    """The where network g of a pair: Dense(C_s -> 1), kernel uniform +-1/sqrt(C_s), bias 1 (the reference).

    Args:
        source_channels: C_s.
        name: the layer's name.

    Returns:
        A built Dense layer; `relu6(g(pooled source))` gives lambda.

    """
    return _built_dense(source_channels, 1, torch_uniform(source_channels), "ones", name)


class WhichNetwork(keras.layers.Layer):
    """The which network h of a pair (L2T-www): per source channel, one dense layer with softplus.

    Our reading of the thesis's "fed the source activation maps": each source channel's map is adaptively
    average-pooled to at most 4x4 (P <= 16 values), and channel c's own dense layer maps those P values to
    9 = 3x3 values through softplus; the 3x3 grid is bilinearly upsampled to the target map's H x W, giving gamma >= 0.
    Parameters: C_s x (P x 9 + 9), e.g. 9,792 for a 64-channel 8x8 source map. The kernel starts at zero and
    the bias at log(e - 1), so gamma starts at exactly 1 (L2T-www starts as L2T-ww).

    Args:
        channels: C_s.
        pooled_size: the pooled side (min(4, source side)).
        name: the layer's name.

    """

    def __init__(self, channels: int, pooled_size: int, name: str | None = None):
        super().__init__(name=name, dtype=matching_dtype())
        self.pooled_size = pooled_size
        inputs = pooled_size * pooled_size
        cells = WHICH_GRID * WHICH_GRID
        self.kernel = self.add_weight((channels, inputs, cells), initializer="zeros", name="kernel")
        self.bias = self.add_weight(
            (channels, cells), initializer=keras.initializers.Constant(SOFTPLUS_ONE), name="bias"
        )

    def call(self, source_map, output_size):
        """Compute gamma (B, H, W, C_s) for a source map (B, h, w, C_s) and the target size (H, W)."""
        pooled = resize(source_map, (self.pooled_size, self.pooled_size), average_matrix)
        batch, channels = tf.shape(pooled)[0], pooled.shape[-1]
        flat = tf.reshape(tf.transpose(pooled, (0, 3, 1, 2)), (batch, channels, -1))  # (B, C, P)
        grid = tf.nn.softplus(tf.einsum("bcp,cpk->bck", flat, self.kernel) + self.bias)  # (B, C, 9)
        grid = tf.transpose(tf.reshape(grid, (batch, channels, WHICH_GRID, WHICH_GRID)), (0, 2, 3, 1))
        return resize(grid, output_size)


def pair_loss(source_map, adapted_target, what=None, where=None, which=None):
    """The weighted feature-matching loss of one pair (L2T-ww eq. 2; L2T-www adds gamma).

    L_pair = mean_b( lambda_b * sum_c w_bc * mean_ij( gamma_bijc * (resize(S)_bijc - r(T)_bijc)^2 ) ).

    Args:
        source_map: S_m(x), (B, h, w, C_s), no gradient.
        adapted_target: r(T_n(x)), (B, H, W, C_s).
        what: w (B, C_s), summing to 1 over channels; None for uniform 1/C_s.
        where: lambda (B,); None for 1.
        which: gamma (B, H, W, C_s); None for 1.

    Returns:
        The scalar loss.

    """
    resized = resize(source_map, adapted_target.shape[1:3])
    squared = tf.square(resized - adapted_target)
    if which is not None:
        squared = which * squared
    per_channel = tf.reduce_mean(squared, axis=(1, 2))  # (B, C_s)
    if what is None:
        per_sample = tf.reduce_mean(per_channel, axis=1)
    else:
        per_sample = tf.reduce_sum(what * per_channel, axis=1)
    if where is not None:
        per_sample = where * per_sample
    return tf.reduce_mean(per_sample)


def exact_moments(layer, inputs, mask):
    """Batch moments with the full gradient (mean, then the mean of squared deviations).

    Keras 3's TensorFlow `BatchNormalization` uses `tf.nn.moments`, which stops the gradient of the mean
    inside the variance: exact to first order, wrong for the second-order gradients of the meta step.
    Installed on a layer by `use_exact_batch_norm`; the forward values are the same. Under a `tf.distribute`
    strategy with several replicas, the moments are the global batch's (summed over replicas, still differentiable
    to any order), so that a 2-replica step equals the 1-device step on the same global batch.

    Args:
        layer: the BatchNormalization layer.
        inputs: its input batch.
        mask: must be None.

    Returns:
        (mean, variance) over the layer's reduction axes, keepdims as Keras expects.

    """
    if mask is not None:
        raise ValueError("exact batch moments do not support masks")
    axes = keras_internals.batch_norm_axes(layer)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:  # the global batch's moments, on every replica
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
        total, count = context.all_reduce("sum", [tf.reduce_sum(inputs, axis=axes, keepdims=True), count])
        mean = total / count
        variance = context.all_reduce("sum", tf.reduce_sum(tf.square(inputs - mean), axis=axes, keepdims=True))
        variance = variance / count
    else:
        mean = tf.reduce_mean(inputs, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(inputs - mean), axis=axes, keepdims=True)
    return tf.squeeze(mean, axes), tf.squeeze(variance, axes)


def use_exact_batch_norm(model: keras.Model) -> int:
    """Make every BatchNormalization layer of a model compute its training-mode moments exactly.

    The layers stay plain `keras.layers.BatchNormalization` (the model saves and reloads as before); only
    the moments function of these instances changes.

    Args:
        model: the target network.

    Returns:
        The number of layers changed.

    """
    count = 0
    for layer in keras_internals.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            keras_internals.set_batch_norm_moments(
                layer, lambda inputs, mask, layer=layer: exact_moments(layer, inputs, mask)
            )
            count += 1
    return count
