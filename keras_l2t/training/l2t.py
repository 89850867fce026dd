"""L2TModel: L2T-ww, L2T-www and the feature-matching baselines as one custom `keras.Model`.

L2T-ww: Jang, Lee, Hwang, Shin, "Learning What and Where to Transfer", ICML 2019, Algorithm 1. The target
network T (weights theta, with one 1x1 adapter per pair) is trained on CE + beta * L_wfm, where
L_wfm = sum over pairs (m, n) of lambda * sum_c w_c * mean_ij((S_m - r(T_n))^2) (eq. 2); the what network
(w = softmax(f(S_m))) and the where network (lambda = relu6(g(S_m))) have weights phi learned by a bilevel
update: after the real step, take `inner_steps` look-ahead SGD steps on beta * L_wfm and one on CE, then
follow the CE at the resulting weights back to phi through those steps (second order; eq. 5-6).
L2T-www multiplies the squared error by gamma from a third, which-pixels network (`WhichNetwork`).
UFM (Romero et al. 2014, FitNets hints): equal-resolution pairs, w = 1/C_s, lambda = 1, no meta step.
The baselines fm_single, at, lwf and lwf_at (their losses and choices): `keras_l2t.training.baselines`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_l2t.core import hardware
from keras_l2t.networks import backbones
from keras_l2t.training import baselines, matching, meta_schedule
from keras_l2t.training.meta_step import BilevelMetaStep, replicas
from keras_l2t.training.optim import TorchAdam, TorchSGD

METHODS = ("scratch", "ufm", "fm_uniform", "l2t_ww", "l2t_www", *baselines.METHODS)
META_METHODS = ("l2t_ww", "l2t_www")


def stage_outputs(model: keras.Model, taps) -> list[str]:
    """The last tap at each spatial resolution (e.g. the last block of each ResNet stage).

    Args:
        model: a backbone.
        taps: its ordered tap names.

    Returns:
        One tap name per resolution, in order.

    """
    last = {}
    for tap in taps:
        last[tuple(model.get_layer(tap).output.shape[1:3])] = tap
    return list(last.values())


def _default_pairs(method: str, source_shapes, target_shapes) -> list[tuple[int, int]]:
    if method == "scratch":
        return []
    if method == "ufm" or method in baselines.METHODS:
        return baselines.default_pairs(method, source_shapes, target_shapes)
    return matching.all_pairs(len(source_shapes), len(target_shapes))


class L2TModel(BilevelMetaStep, keras.Model):
    """Train a target network with (meta-)weighted feature matching against a frozen source network.

    `fit` runs `train_step`; `evaluate` and `predict` use the target alone; `model.target` is the trained
    network (a plain Keras model that saves as `.keras`). Compile with a `TorchSGD` target optimizer (the
    default) and, for L2T methods, a meta optimizer (default `TorchAdam`, lr 1e-4, eps 1e-8, as PyTorch's Adam).

    Args:
        source: the pretrained source network (frozen, always run in inference mode).
        target: the target network with its classifier (returns logits). Changed in place: its BatchNorm layers
            compute exact training-mode moments from now on (`matching.use_exact_batch_norm`; same values, full
            gradient), so that the meta step's second-order gradients are exact. It still saves as plain Keras.
        method: "l2t_ww", "l2t_www", "ufm", "fm_uniform", "scratch" (cross-entropy only) or a baseline of
            `baselines` ("fm_single", "at", "lwf", "lwf_at"; LwF needs a source ending in its classifier).
        pairs: (source tap index, target tap index) pairs; default all-to-all (UFM, AT: equal resolution).
        beta: the matching (transfer) loss factor; None for the method's (`baselines.default_beta`: 0.5, L2T-ww's).
        inner_steps: T, look-ahead steps on the matching loss in the meta step.
        source_taps: source layer names; default the last tap of each resolution of the source's spec.
        target_taps: target layer names; default the target spec's taps.
        meta_weight_decay: coupled weight decay of the meta optimizer.
        meta_every: take the meta step every this many iterations (1, the reference, every iteration; k > 1
            costs about (real step + meta step / k) per iteration, and makes k times fewer meta updates).
        meta_steps: meta steps per meta iteration, each on a fresh look-ahead (1, the reference).
        meta_warmup: meta steps on the first batch before the target's first step (0, the reference).
        meta_reach: scale the meta rate to the run: rate = meta_reach / the run's planned meta steps, so that
            Adam can move a meta weight by about this much (`meta_schedule.MetaRate`, which
            `strategies.callbacks` adds); None (the reference) keeps the meta optimizer's rate.
        name: the model's name.

    """

    def __init__(
        self,
        source: keras.Model,
        target: keras.Model,
        *,
        method: str = "l2t_ww",
        pairs=None,
        beta: float | None = None,
        inner_steps: int = 2,
        source_taps=None,
        target_taps=None,
        meta_weight_decay: float = 1e-4,
        meta_every: int = 1,
        meta_steps: int = 1,
        meta_warmup: int = 0,
        meta_reach: float | None = None,
        name: str = "l2t",
    ):
        super().__init__(name=name)
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        self.method, self.inner_steps, self.meta_weight_decay = method, inner_steps, meta_weight_decay
        self.beta = baselines.default_beta(method) if beta is None else beta
        meta_schedule.check_options(meta_every, meta_steps, meta_warmup, meta_reach)
        self.meta_every, self.meta_steps, self.meta_warmup = meta_every, meta_steps, meta_warmup
        self.meta_reach = meta_reach
        source.trainable = False
        baselines.check_source(source, method)
        self.source, self.target = source, target
        if source_taps is None:
            source_taps = stage_outputs(source, backbones.spec(source.name).taps)
        if target_taps is None:
            target_taps = backbones.spec(target.name).taps
        old_task = method in baselines.OLD_TASK_METHODS  # the source's logits follow its taps
        self.source_features = backbones.tap_model(source, source_taps, include_output=old_task)
        self.target_features = baselines.target_tap_model(target, target_taps, method)
        source_shapes = [tuple(output.shape[1:]) for output in self.source_features.outputs[: len(source_taps)]]
        target_shapes = [tuple(output.shape[1:]) for output in self.target_features.outputs[: len(target_taps)]]
        pairs = (
            [tuple(pair) for pair in pairs]
            if pairs is not None
            else _default_pairs(method, source_shapes, target_shapes)
        )
        self.pairs, self.attention_pairs = baselines.split_pairs(method, pairs, source_shapes, target_shapes)
        matching.use_exact_batch_norm(target)  # in place, as the docstring says
        self._build_pair_networks(source_shapes, target_shapes)
        self.old_head = baselines.make_old_head(method, source, target)  # LwF's second head, else None
        self.theta = list(self.target_features.trainable_variables) + [
            variable
            for layer in [*self.adapters, self.old_head]
            if layer is not None
            for variable in layer.trainable_variables
        ]
        self.phi = [variable for layer in self.what + self.where + self.which for variable in layer.trainable_variables]
        self.trackers = {key: keras.metrics.Mean(name=key) for key in ("loss", "ce", "matching", "meta_loss")}
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True

    def _build_pair_networks(self, source_shapes, target_shapes) -> None:
        self.adapters, self.what, self.where, self.which = [], [], [], []
        for index, (m, n) in enumerate(self.pairs):
            source_channels, target_channels = source_shapes[m][-1], target_shapes[n][-1]
            self.adapters.append(matching.make_adapter(target_channels, source_channels, f"adapter_{index}"))
            if self.method in META_METHODS:
                self.what.append(matching.make_what(source_channels, f"what_{index}"))
                self.where.append(matching.make_where(source_channels, f"where_{index}"))
            if self.method == "l2t_www":
                pooled = min(4, source_shapes[m][0])
                self.which.append(matching.WhichNetwork(source_channels, pooled, name=f"which_{index}"))

    def compile(self, optimizer=None, meta_optimizer=None, jit_compile: bool = False, **kwargs):
        """Configure training.

        Args:
            optimizer: the target optimizer; default `TorchSGD(0.1, momentum=0.9, coupled_weight_decay=1e-4)`.
                The L2T methods need a `TorchSGD` (their look-ahead steps reuse its rule and buffers).
            meta_optimizer: the meta-networks' optimizer; default TorchAdam(1e-4, epsilon=1e-8).
            jit_compile: XLA; off by default (10x slower on CPU here), worth trying on a GPU.
            **kwargs: passed to `keras.Model.compile`.

        """
        optimizer = optimizer or TorchSGD()
        if self.method in META_METHODS and not isinstance(optimizer, TorchSGD):
            raise TypeError(
                f"{self.method} needs a keras_l2t.training.optim.TorchSGD target optimizer for its look-ahead "
                f"steps, got {type(optimizer).__name__}."
            )
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        self.optimizer.build(self.theta)
        self.meta_optimizer = meta_optimizer or TorchAdam(1e-4, epsilon=1e-8)
        if self.phi:
            self.meta_optimizer.build(self.phi)

    @property
    def target_optimizer(self) -> TorchSGD:
        """The target's `TorchSGD` (unwrapped from the `LossScaleOptimizer` Keras adds under mixed_float16)."""
        return getattr(self.optimizer, "inner_optimizer", self.optimizer)

    @property
    def metrics(self):
        """The Mean trackers (loss, ce, matching, meta_loss) and accuracy, reset by `fit` at each epoch."""
        return [*self.trackers.values(), self.accuracy]

    def call(self, inputs, training=False):
        """The target network's logits (the source and meta-networks play no part at inference)."""
        return self.target(inputs, training=training)

    # ---------------------------------------------------------------------------------- the pieces

    def source_maps(self, inputs) -> list:
        """The frozen source's tapped features (inference mode, no gradient), in the matching dtype.

        Args:
            inputs: the batch.

        Returns:
            One map per source tap, computed in the variable dtype (float32 under a mixed policy: the meta step
            depends on them, and bfloat16 maps alone turn its gradient, cosine 0.60 with the float32 one at the
            reference rate 0.1; see `hardware.computing_in`).

        """
        with hardware.computing_in(self.source_features, self.theta[0].dtype):  # mixed policy: float32
            maps = tf.nest.flatten(self.source_features(inputs, training=False))
        return [tf.stop_gradient(tf.cast(x, self.theta[0].dtype)) for x in maps]

    def meta_weights(self, source_maps):
        """What, where and which weights of every pair (None where the method fixes them).

        Args:
            source_maps: the source taps' outputs.

        Returns:
            A list with one (w (B, C_s) or None, lambda (B,) or None, gamma (B, H, W, C_s) or None) per pair.

        """
        weights = []
        for index, (m, n) in enumerate(self.pairs):
            pooled = tf.reduce_mean(source_maps[m], axis=(1, 2))
            what = where = which = None
            if self.method in META_METHODS:
                what = tf.nn.softmax(self.what[index](pooled), axis=-1)
                where = tf.nn.relu6(self.where[index](pooled))[:, 0]
            if self.method == "l2t_www":
                size = self.target_features.outputs[n].shape[1:3]
                which = self.which[index](source_maps[m], output_size=size)
            weights.append((what, where, which))
        return weights

    def _forward(self, theta, inputs):
        """Adapted target taps, the target's outputs (taps, then logits last) and updated BatchNorm statistics.

        `theta` is a list of tensors in `self.theta` order (target weights, adapter kernels and biases, LwF's head).
        """
        count = len(self.target_features.trainable_variables)
        non_trainable = [variable.value for variable in self.target_features.non_trainable_variables]
        outputs, statistics = self.target_features.stateless_call(theta[:count], non_trainable, inputs, training=True)
        outputs = [tf.cast(output, theta[0].dtype) for output in outputs]  # mixed precision: match in float32
        adapter_values = theta[count:]
        adapted = []
        for index, (_, n) in enumerate(self.pairs):
            kernel, bias = adapter_values[2 * index], adapter_values[2 * index + 1]
            adapted.append(tf.einsum("bhwc,cd->bhwd", outputs[n], kernel) + bias)
        return adapted, outputs, statistics

    def losses_at(self, theta, inputs, labels, source_maps, weights):
        """Cross-entropy and L_wfm (eq. 2, summed over pairs; plus the baselines' terms) at the given target weights.

        Args:
            theta: target weights as tensors, in `self.theta` order.
            inputs: the batch.
            labels: its labels.
            source_maps: the source's tapped features.
            weights: the pairs' (what, where, which), see `meta_weights`.

        Returns:
            (cross-entropy, matching loss, logits, updated BatchNorm statistics).

        """
        adapted, outputs, statistics = self._forward(theta, inputs)
        logits = outputs[-1]
        cross_entropy = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        matching_loss = tf.constant(0.0, logits.dtype)
        for (m, _), target_map, (what, where, which) in zip(self.pairs, adapted, weights, strict=True):
            matching_loss += matching.pair_loss(source_maps[m], target_map, what, where, which)
        matching_loss += baselines.transfer_loss(self, theta, outputs, source_maps)  # AT, LwF; 0 for the others
        return cross_entropy, matching_loss, logits, statistics

    # ---------------------------------------------------------------------------------- fit / evaluate

    def train_step(self, data):
        """One iteration of Jang et al. (2019), Algorithm 1: the real step on theta, then the meta step on phi.

        theta <- SGD step on CE + beta * L_wfm (eq. 2, gamma-weighted for L2T-www) with phi fixed; then, for
        l2t_ww / l2t_www (every `meta_every` iterations), phi <- Adam step on the gradient of the look-ahead CE
        (`lookahead_loss`, eq. 5-6) plus weight decay. The order and the look-ahead follow the authors' code
        (checked equal to it in float64, benchmarks/reference_check.py). The schedules `meta_steps` and
        `meta_warmup` (`BilevelMetaStep`) take more such steps; off, the step is the reference's.

        Args:
            data: (images, labels) of one batch.

        Returns:
            The trackers' running means and accuracy, for `fit`'s logs.

        """
        inputs, labels = _unweighted(data)
        source_maps = self.source_maps(inputs)
        if self.phi:
            self.meta_warm_up(inputs, labels, source_maps)  # the first iteration only, when asked
        weights = self.meta_weights(source_maps)
        theta = [variable.value for variable in self.theta]
        with tf.GradientTape() as tape:  # 1. the real step on theta
            tape.watch(theta)
            cross_entropy, matching_loss, logits, statistics = self.losses_at(
                theta, inputs, labels, source_maps, weights
            )
            loss = cross_entropy + self.beta * matching_loss
            scaled = loss / replicas()  # the optimizer sums the replicas' gradients: the global batch's mean
            scaled = self.optimizer.scale_loss(scaled)  # mixed_float16: Keras' LossScaleOptimizer unscales
        gradients = tape.gradient(scaled, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        self.optimizer.apply_gradients(zip(gradients, self.theta, strict=True))
        for variable, value in zip(self.target_features.non_trainable_variables, statistics, strict=True):
            variable.assign(value)  # BatchNorm statistics move once per step, never in the look-ahead
        meta_loss, meta_ran = self.meta_phase(inputs, labels, source_maps, loss.dtype)  # 2. phi, from the new theta
        values = {"loss": loss, "ce": cross_entropy, "matching": matching_loss}
        for key, value in values.items():
            self.trackers[key].update_state(value)
        self.trackers["meta_loss"].update_state(meta_loss, sample_weight=meta_ran)  # steps that ran it only
        self.accuracy.update_state(labels, logits)
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data):
        """The target's cross-entropy and accuracy on one batch (inference mode), for `evaluate` and validation."""
        inputs, labels = _unweighted(data)
        logits = self.target(inputs, training=False)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        self.trackers["loss"].update_state(loss)
        self.accuracy.update_state(labels, logits)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy.result()}

    def predict_step(self, data):
        """The target's logits for one batch (images, or (images, labels))."""
        inputs = data[0] if isinstance(data, (tuple, list)) else data
        return self.target(inputs, training=False)


def _unweighted(data) -> tuple:
    """(images, labels) of a batch; a batch with sample weights (or fit's class_weight) is refused, not ignored."""
    inputs, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(
            "L2TModel does not support sample_weight or class_weight: its real and look-ahead steps take unweighted "
            "means (Jang et al. 2019), so weights would change only part of the objective. Balance the classes in "
            "the data instead (e.g. data.load(samples_per_class=N)) or train a classic strategy."
        )
    return inputs, labels
