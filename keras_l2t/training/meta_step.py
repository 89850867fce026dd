"""The bilevel meta step of L2T-ww / L2T-www, and the schedules of meta steps it runs (a mixin of `L2TModel`).

Jang, Lee, Hwang, Shin, "Learning What and Where to Transfer", ICML 2019, eq. 5-6 and Algorithm 1: from the
current target weights, take T look-ahead SGD steps on beta * L_wfm and one on the cross-entropy, then
differentiate the cross-entropy at the resulting weights with respect to the meta-networks' weights phi
(second order) and take an Adam step on phi. The reference takes one such step per target iteration.

Schedules (off by default, see `L2TModel`): `meta_steps` meta steps per iteration, each on a fresh look-ahead
from the same target weights with the phi the previous one left; `meta_warmup` meta steps before the target's
first step. `keras_l2t.training.meta_schedule` plans their number and scales the meta rate to it.
"""

from __future__ import annotations

import tensorflow as tf

from keras_l2t.core import hardware
from keras_l2t.training.optim import torch_sgd_step


def replicas() -> int:
    """How many replicas train in sync (1 outside a `tf.distribute` strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(values: list) -> list:
    """Sum tensors over the replicas of the current strategy (differentiable: the gradient of a sum is a sum)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


class BilevelMetaStep:
    """The look-ahead, the hypergradient and the meta steps of `L2TModel` (Jang et al. 2019, eq. 5-6).

    Uses the model's `theta`, `phi`, `beta`, `inner_steps`, `meta_weight_decay`, `meta_every`, `meta_steps`,
    `meta_warmup`, `losses_at`, `meta_weights`, `target_optimizer`, `optimizer` and `meta_optimizer`.
    """

    def _sgd(self, theta, velocity, loss_function):
        """One differentiable look-ahead step, the same on every replica (its gradient is the global batch's)."""
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = loss_function(theta) / replicas()  # summed over replicas: the global batch's mean
        gradients = tape.gradient(loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gradients = sum_over_replicas(gradients)
        optimizer = self.target_optimizer
        rate = tf.cast(optimizer.learning_rate, theta[0].dtype)
        momentum, decay = optimizer.momentum, optimizer.coupled_weight_decay
        steps = [
            torch_sgd_step(value, v, g, rate, momentum, decay)
            for value, v, g in zip(theta, velocity, gradients, strict=True)
        ]
        return [step[0] for step in steps], [step[1] for step in steps]

    def lookahead_loss(self, inputs, labels, source_maps):
        """The outer objective of the meta step: CE after T matching look-ahead steps and one CE step (eq. 5-6).

        Starts from the current target weights and momentum buffers; differentiable with respect to phi. Under a
        mixed policy it computes in the variable dtype (float32), see `hardware.computing_in`.

        Args:
            inputs: the (augmented) batch.
            labels: its labels.
            source_maps: the source's tapped features of the batch.

        Returns:
            The outer cross-entropy (scalar).

        """
        with hardware.computing_in(self.target_features, self.theta[0].dtype):  # mixed policy: float32
            return self._lookahead_loss(inputs, labels, source_maps)

    def _lookahead_loss(self, inputs, labels, source_maps):
        weights = self.meta_weights(source_maps)
        theta = [tf.identity(variable.value) for variable in self.theta]
        velocity = [tf.identity(buffer.value) for buffer in self.target_optimizer.velocity_for(self.theta)]
        for _ in range(self.inner_steps):
            theta, velocity = self._sgd(
                theta, velocity, lambda t: self.beta * self.losses_at(t, inputs, labels, source_maps, weights)[1]
            )
        theta, velocity = self._sgd(
            theta, velocity, lambda t: self.losses_at(t, inputs, labels, source_maps, weights)[0]
        )
        return self.losses_at(theta, inputs, labels, source_maps, weights)[0]

    def meta_gradients(self, inputs, labels, source_maps):
        """d(lookahead_loss)/d(phi) through the look-ahead steps (second order; Jang et al. 2019, eq. 6).

        Returns:
            (outer loss, gradients in `self.phi` order).

        """
        with tf.GradientTape() as tape:
            outer = self.lookahead_loss(inputs, labels, source_maps)
            scaled = outer / replicas()  # the meta optimizer sums the replicas' gradients
        return outer, tape.gradient(scaled, self.phi, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _meta_step(self, inputs, labels, source_maps):
        meta_loss, meta_gradients = self.meta_gradients(inputs, labels, source_maps)
        decay = self.meta_weight_decay / replicas()  # added on each replica, then summed with the gradients
        meta_gradients = [g + decay * p for g, p in zip(meta_gradients, self.phi, strict=True)]
        self.meta_optimizer.apply_gradients(zip(meta_gradients, self.phi, strict=True))
        return meta_loss

    def _meta_steps(self, count: int, inputs, labels, source_maps):
        """`count` meta steps, each on a fresh look-ahead from the current theta; their mean outer loss.

        One device: a `tf.while_loop` (one traced step). Several replicas: the steps unrolled, since their
        all-reduces cannot run inside a loop body (`merge_call` under a `tf.function`).
        """
        if count == 1:  # the reference: exactly the graph of one step
            return self._meta_step(inputs, labels, source_maps)
        if replicas() > 1:  # in program order (TF orders a function's variable reads and writes)
            return tf.add_n([self._meta_step(inputs, labels, source_maps) for _ in range(count)]) / count

        def step(index, total):
            return index + 1, total + self._meta_step(inputs, labels, source_maps)

        start = (tf.constant(0), tf.constant(0.0, self.theta[0].dtype))
        _, total = tf.while_loop(lambda index, _: index < count, step, start)
        return total / count

    def meta_warm_up(self, inputs, labels, source_maps) -> None:
        """Before the target's first step, `meta_warmup` meta steps on the first batch (a no-op after it)."""
        if not self.meta_warmup:
            return
        if replicas() > 1:
            raise ValueError("meta_warmup runs on one device only (its all-reduces cannot run under a condition).")
        first = tf.equal(self.optimizer.iterations, 0)
        tf.cond(
            first,
            lambda: self._meta_steps(self.meta_warmup, inputs, labels, source_maps),
            lambda: tf.constant(0.0, self.theta[0].dtype),
        )

    def meta_phase(self, inputs, labels, source_maps, dtype):
        """The meta step(s) of one iteration, after the real step (every `meta_every` iterations).

        Returns:
            (mean outer loss of the steps taken, 1.0 if they ran else 0.0), both of `dtype`.

        """
        zero = tf.constant(0.0, dtype)
        if not self.phi:
            return zero, zero
        if self.meta_every == 1:
            return self._meta_steps(self.meta_steps, inputs, labels, source_maps), tf.constant(1.0, dtype)
        due = tf.equal((self.optimizer.iterations - 1) % self.meta_every, 0)  # the first iteration included
        meta_loss = tf.cond(due, lambda: self._meta_steps(self.meta_steps, inputs, labels, source_maps), lambda: zero)
        return meta_loss, tf.cast(due, dtype)
