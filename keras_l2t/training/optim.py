"""PyTorch-style SGD (also a differentiable look-ahead step) and Adam for Keras, as the L2T-ww reference uses them."""

from __future__ import annotations

import math
import warnings

import keras


def torch_sgd_step(value, velocity, gradient, learning_rate, momentum: float, weight_decay: float):
    """One PyTorch SGD step with coupled weight decay, as a pure function (differentiable).

    v <- momentum * v + (g + weight_decay * theta);  theta <- theta - lr * v.

    Args:
        value: the parameter theta.
        velocity: its momentum buffer v.
        gradient: g.
        learning_rate: lr.
        momentum: the momentum factor.
        weight_decay: the coupled weight decay (L2 penalty added to the gradient).

    Returns:
        (new value, new velocity).

    """
    velocity = momentum * velocity + gradient + weight_decay * value
    return value - learning_rate * velocity, velocity


class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled weight decay exactly as `torch.optim.SGD` (dampening 0, no Nesterov).

    Keras' SGD folds the learning rate into the velocity and its `weight_decay` is decoupled; L2T-ww's
    reference uses PyTorch's update, which this reproduces. `velocity_for(variables)` exposes the momentum
    buffers so that `L2TModel` can take differentiable look-ahead steps with the same rule.

    Args:
        learning_rate: the step size (a float; change it per epoch with a LearningRateScheduler callback).
        momentum: the momentum factor.
        coupled_weight_decay: L2 penalty added to the gradients.
        name: the optimizer's name.

    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        coupled_weight_decay: float = 1e-4,
        name: str = "torch_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum
        self.coupled_weight_decay = coupled_weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(variable, "velocity") for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        velocity = self.velocities[self._get_variable_index(variable)]
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        new_value, new_velocity = torch_sgd_step(
            variable,
            velocity,
            keras.ops.cast(gradient, variable.dtype),
            learning_rate,
            self.momentum,
            self.coupled_weight_decay,
        )
        self.assign(velocity, new_velocity)
        self.assign(variable, new_value)

    def velocity_for(self, variables) -> list:
        """The momentum buffers of the given (already optimised) variables, in their order."""
        return [self.velocities[self._get_variable_index(variable)] for variable in variables]

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "coupled_weight_decay": self.coupled_weight_decay})
        return config


class TorchAdam(keras.optimizers.Optimizer):
    """Adam exactly as `torch.optim.Adam` (Kingma and Ba 2015, Algorithm 1), the L2T-ww meta optimizer.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
    Keras' Adam adds epsilon before the second moment's bias correction ("epsilon hat"; at step t it acts as
    eps / sqrt(1 - b2^t), 3e-7 at the first step), so its steps differ from PyTorch's for gradient elements below
    about 1e-5. L2T-ww's meta step has such elements (measured: 2 % of the meta kernels' hypergradient elements are
    below 1e-8, moved by weight decay alone; see `benchmarks/reference_check.py`). Weight decay is not
    part of this optimizer: `L2TModel` adds the coupled decay to the meta-gradients, as
    `torch.optim.Adam(weight_decay=...)` does.

    Args:
        learning_rate: lr.
        beta_1: b1.
        beta_2: b2.
        epsilon: eps, added after the bias correction as in PyTorch.
        name: the optimizer's name.

    """

    def __init__(
        self,
        learning_rate=1e-4,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "torch_adam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments = [self.add_variable_from_reference(variable, "first_moment") for variable in variables]
        self.second_moments = [self.add_variable_from_reference(variable, "second_moment") for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        ops, index = keras.ops, self._get_variable_index(variable)
        first, second = self.first_moments[index], self.second_moments[index]
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        self.assign(first, self.beta_1 * first + (1 - self.beta_1) * gradient)
        self.assign(second, self.beta_2 * second + (1 - self.beta_2) * ops.square(gradient))
        beta_1, beta_2 = (ops.convert_to_tensor(beta, variable.dtype) for beta in (self.beta_1, self.beta_2))
        first_correction, second_correction = 1 - ops.power(beta_1, step), 1 - ops.power(beta_2, step)
        denominator = ops.sqrt(second / second_correction) + self.epsilon
        rate = ops.cast(learning_rate, variable.dtype) / first_correction
        self.assign(variable, variable - rate * first / denominator)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


def reference_cosine(epochs: int, base_learning_rate: float = 0.1):
    """The L2T-ww reference schedule: epoch e (from 0) of E uses base/2 * (1 + cos(pi * (e + 1) / E)).

    Stepped at each epoch's start, so the last epoch runs at learning rate 0, as in the reference.

    Args:
        epochs: E, the run's length.
        base_learning_rate: the starting rate.

    Returns:
        A function epoch -> learning rate, for `keras.callbacks.LearningRateScheduler`.

    """
    if epochs == 1:
        warnings.warn(
            "epochs=1: the reference cosine schedule runs a run's last epoch at learning rate 0, so a one-epoch run "
            "does not train (every method ends where it started). Use 2 epochs or more.",
            stacklevel=3,
        )

    def schedule(epoch: int, current=None) -> float:
        return 0.5 * base_learning_rate * (1.0 + math.cos(math.pi * (epoch + 1) / epochs))

    return schedule


def linear_warmup(schedule, warmup_epochs: int):
    """A schedule that ramps up linearly before `schedule`: epoch e < W runs at schedule(e) * (e + 1) / (W + 1).

    Goyal et al. 2017 ("Accurate, large minibatch SGD", section 2.2, gradual warm-up); W = 0 is `schedule` itself.

    Args:
        schedule: a function epoch -> learning rate.
        warmup_epochs: W.

    Returns:
        A function epoch -> learning rate, for `keras.callbacks.LearningRateScheduler`.

    """
    if not warmup_epochs:
        return schedule

    def warmed_up(epoch: int, current=None) -> float:
        factor = (epoch + 1) / (warmup_epochs + 1) if epoch < warmup_epochs else 1.0
        return schedule(epoch) * factor

    return warmed_up
