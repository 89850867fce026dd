"""The matching family's baselines of L2T-ww's Table 1: FitNets (one pair), attention transfer, LwF, LwF + AT.

Jang et al. (ICML 2019, section 4.1, Table 1) rank L2T-ww against these methods, trained with the same source
(ResNet-32 on Tiny ImageNet), target (VGG-9), loop, optimizer and schedule. `l2t.L2TModel` runs them as
its methods "fm_single", "at", "lwf" and "lwf_at"; this module holds what is particular to them. The reference
repository (alinlab/L2T-ww) does not publish its baselines' code (its VGG has an `lwf_lyr`, a Dense(512 -> 200)
second head); where the papers leave a choice, ours is:

- fm_single (FitNets, Romero et al. 2015, section 2.2: "the middle layer of the teacher" hints "the middle layer
  of the student"): one pair, the middle source stage output and the middle target tap (resnet32 / vgg9: 32
  channels at 16x16 and `relu4`, 256 channels at 8x8; the source map is resized bilinearly to 8x8, as L2T-ww
  does for any pair). The regressor is L2T-ww's 1x1 adapter; the loss is fm_uniform's (eq. 2 with w = 1/C and
  lambda = 1) at beta 0.5 (L2T-ww's), trained jointly with the cross-entropy, not in FitNets' two stages.
- at (Zagoruyko & Komodakis 2017, eq. 2 with p = 2): per sample, the attention map Q = sum_c A_c^2, flattened and
  divided by its L2 norm; loss = beta_AT / 2 * sum over pairs of mean over batch and positions of (Q_S - Q_T)^2,
  with beta_AT = 1000 (their "10^3 divided by the number of elements in the attention map and batch size").
  Pairs: AT's "after each group of residual blocks", i.e. each source stage output with the target tap of the
  same resolution (resnet32 / vgg9: 32, 16 and 8 px); no adapter (channels are summed away).
- lwf (Li & Hoiem 2017, eq. 2 and Algorithm 1): the old task is the source's own 200-class Tiny ImageNet
  classifier (`fc`; the source must be built with it, `old_task_classes`); its outputs y_o on the batch, frozen,
  are the recorded responses. The target gets a second head, Dense(C_old) on its pooled features (normal(0,
  0.01) kernel, zero bias, like its classifier), trained with it; L_old = -mean_b sum_k softmax(y_o / T)_k *
  log softmax(y_hat_o / T)_k with T = 2 and lambda_o = 1 (the paper's). The target is trained from scratch, so
  LwF's warm-up of the new head is moot. The second head is not part of `model.target`.
- lwf_at: both terms at their own weights, added.

beta (`L2TModel(beta=...)`, a run's matching weight) multiplies the whole transfer term: 0.5 for fm_single by
default (L2T-ww's), 1 for at, lwf and lwf_at, whose terms already carry their papers' weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_l2t.networks import backbones
from keras_l2t.training import matching

METHODS = ("fm_single", "at", "lwf", "lwf_at")
ATTENTION_METHODS = ("at", "lwf_at")
OLD_TASK_METHODS = ("lwf", "lwf_at")
AT_BETA = 1000.0  # Zagoruyko & Komodakis (2017): beta / 2 times the mean squared attention difference
TEMPERATURE = 2.0  # Li & Hoiem (2017): T = 2 for the old task's softened outputs
OLD_TASK_WEIGHT = 1.0  # Li & Hoiem (2017): lambda_o = 1
SOURCE_CLASSES = 200  # the L2T-ww source's task, Tiny ImageNet
FEATURE_MATCHING_BETA = 0.5  # L2T-ww's beta, for fm_single as for fm_uniform and L2T-ww


def default_beta(method: str) -> float:
    """The factor of a method's transfer term when none is given.

    Args:
        method: an `L2TModel` method.

    Returns:
        1 for at, lwf and lwf_at (their terms carry their papers' weights), else 0.5 (L2T-ww's beta).

    """
    return 1.0 if method in ATTENTION_METHODS + OLD_TASK_METHODS else FEATURE_MATCHING_BETA


def old_task_classes(method: str) -> int | None:
    """How many classes the source's own classifier must have for a method: 200 for LwF, None (no classifier) else.

    Args:
        method: a strategy or `L2TModel` method name.

    Returns:
        `SOURCE_CLASSES` for lwf and lwf_at (pass it as `backbones.build(..., num_classes=...)`), else None.

    """
    return SOURCE_CLASSES if method in OLD_TASK_METHODS else None


def equal_resolution_pairs(method: str, source_shapes, target_shapes) -> list[tuple[int, int]]:
    """Each source map with the first target map of the same height and width (UFM's and AT's pairs).

    Args:
        method: the method, for the error message.
        source_shapes: (H, W, C) of each source tap.
        target_shapes: (H, W, C) of each target tap.

    Returns:
        One (source index, target index) pair per source tap.

    Raises:
        ValueError: a source tap whose size no target tap has.

    """
    pairs = []
    for m, source in enumerate(source_shapes):
        same = [n for n, target in enumerate(target_shapes) if target[:2] == source[:2]]
        if not same:
            raise ValueError(
                f"{method} pairs maps of equal resolution, but no target tap has the size {source[:2]} of "
                f"source tap {m}; target tap sizes: {[shape[:2] for shape in target_shapes]}."
            )
        pairs.append((m, same[0]))
    return pairs


def default_pairs(method: str, source_shapes, target_shapes) -> list[tuple[int, int]]:
    """The pairs of ufm and of this module's methods (see the module docstring for why).

    Args:
        method: "ufm", "fm_single", "at", "lwf" or "lwf_at".
        source_shapes: (H, W, C) of each source tap.
        target_shapes: (H, W, C) of each target tap.

    Returns:
        fm_single: [(middle source tap, middle target tap)]; lwf: []; ufm, at, lwf_at: equal-resolution pairs.

    """
    if method == "fm_single":
        return [(len(source_shapes) // 2, len(target_shapes) // 2)]
    if method == "lwf":
        return []
    return equal_resolution_pairs(method, source_shapes, target_shapes)


def split_pairs(method: str, pairs, source_shapes, target_shapes) -> tuple[list, list]:
    """Split a method's pairs into adapter-matched pairs and attention pairs.

    Args:
        method: an `L2TModel` method.
        pairs: its (source tap, target tap) pairs.
        source_shapes: (H, W, C) of each source tap.
        target_shapes: (H, W, C) of each target tap.

    Returns:
        (pairs matched through an adapter, pairs matched by attention maps): AT's pairs are the second.

    Raises:
        ValueError: an attention pair of maps of different sizes (AT compares maps position by position).

    """
    if method not in ATTENTION_METHODS:
        return list(pairs), []
    for m, n in pairs:
        if source_shapes[m][:2] != target_shapes[n][:2]:
            raise ValueError(
                f"{method} compares attention maps of equal size, but source tap {m} is {source_shapes[m][:2]} "
                f"and target tap {n} is {target_shapes[n][:2]}; pair taps of the same resolution."
            )
    return [], list(pairs)


def attention_map(features):
    """Zagoruyko & Komodakis (2017): the spatial attention map sum_c A_c^2, flattened and L2-normalised per sample.

    Args:
        features: (B, H, W, C) activations.

    Returns:
        (B, H * W) maps of unit L2 norm.

    """
    energy = tf.reduce_sum(tf.square(features), axis=-1)
    return tf.math.l2_normalize(tf.reshape(energy, (tf.shape(energy)[0], -1)), axis=1)


def attention_loss(source_map, target_map):
    """The attention transfer loss of one pair without its factor: mean over batch and positions of (Q_S - Q_T)^2.

    Args:
        source_map: (B, H, W, C_s) source activations (no gradient).
        target_map: (B, H, W, C_t) target activations of the same size.

    Returns:
        The scalar loss (`transfer_loss` multiplies it by beta_AT / 2).

    """
    return tf.reduce_mean(tf.square(attention_map(source_map) - attention_map(target_map)))


def distillation_loss(source_logits, old_logits, temperature: float = TEMPERATURE):
    """Li & Hoiem (2017), eq. 2: the cross-entropy of the target's softened old-task outputs to the source's.

    Args:
        source_logits: (B, K) the source classifier's logits y_o (no gradient).
        old_logits: (B, K) the target's old-task head's logits y_hat_o.
        temperature: T.

    Returns:
        -mean_b sum_k softmax(y_o / T)_k log softmax(y_hat_o / T)_k.

    """
    recorded = tf.nn.softmax(source_logits / temperature, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(recorded * tf.nn.log_softmax(old_logits / temperature, axis=-1), axis=-1))


def check_source(source: keras.Model, method: str) -> None:
    """Check that an LwF source ends in its own classifier (the old task); nothing to check for other methods.

    Raises:
        ValueError: lwf or lwf_at with a source that does not end in a Dense layer, with how to build one that does.

    """
    if method in OLD_TASK_METHODS and not isinstance(source.layers[-1], keras.layers.Dense):
        raise ValueError(
            f"{method} distils the source's own classifier outputs (Li & Hoiem 2017), but {source.name} ends in "
            f"{type(source.layers[-1]).__name__}; build the source with its classifier, e.g. "
            f"backbones.build('resnet32', weights='tinyimagenet', num_classes={SOURCE_CLASSES})."
        )


def target_tap_model(target: keras.Model, taps, method: str) -> keras.Model:
    """The target's taps, then (for LwF) the input of its classifier, then its logits.

    Args:
        target: the target network, ending in its classifier.
        taps: the target layer names to tap.
        method: an `L2TModel` method.

    Returns:
        A model returning [tap..., logits], or [tap..., pooled features, logits] for lwf and lwf_at.

    """
    tapped = backbones.tap_model(target, taps, include_output=True)
    if method not in OLD_TASK_METHODS:
        return tapped
    outputs = [*tapped.outputs[:-1], target.layers[-1].input, target.output]
    return keras.Model(target.input, outputs, name=tapped.name)


def make_old_head(method: str, source: keras.Model, target: keras.Model) -> keras.layers.Dense | None:
    """The target's second head for the old task (LwF): Dense(features -> the source's classes), built.

    Args:
        method: an `L2TModel` method.
        source: the source, ending in its classifier.
        target: the target, ending in its classifier.

    Returns:
        The head (normal(0, 0.01) kernel, zero bias, in the matching dtype) for lwf and lwf_at; None otherwise.

    """
    if method not in OLD_TASK_METHODS:
        return None
    head = keras.layers.Dense(
        source.output.shape[-1],
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="old_task_head",
        dtype=matching.matching_dtype(),
    )
    head.build((None, target.layers[-1].input.shape[-1]))
    return head


def transfer_loss(model, theta, outputs, source_maps):
    """The attention and old-task terms of a model's method at the given target weights (0 for other methods).

    Args:
        model: the `L2TModel` (its method, attention pairs and old-task head).
        theta: its target weights as tensors, in `model.theta` order (the old-task head's kernel and bias last).
        outputs: the target's outputs at theta (`target_tap_model`'s order).
        source_maps: the source's taps (and, for LwF, its logits last), no gradient.

    Returns:
        beta_AT / 2 * sum of the attention losses + lambda_o * L_old, as the method has them.

    """
    loss = tf.constant(0.0, outputs[-1].dtype)
    for m, n in model.attention_pairs:
        loss += AT_BETA / 2 * attention_loss(source_maps[m], outputs[n])
    if model.old_head is not None:
        kernel, bias = theta[-2], theta[-1]
        old_logits = tf.matmul(outputs[-2], kernel) + bias
        loss += OLD_TASK_WEIGHT * distillation_loss(source_maps[-1], old_logits)
    return loss
