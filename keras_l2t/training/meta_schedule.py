"""How many meta steps a run takes, how far Adam can move a meta weight in them, and a meta rate scaled to them.

Adam's step on a weight is about the learning rate or smaller (Kingma and Ba 2015, Section 2.1: |step| <= lr in
the common case, (1 - b1) / sqrt(1 - b2) * lr in the rarest), so in S meta steps at rate lr a meta weight moves
by at most about lr * S. The reference's rate, 1e-4, was set for runs of 7,000-70,000 meta steps (CIFAR-100:
352 iterations x 200 epochs); a CIFAR-10 run at N = 10 and batch 128 takes 200 (bound 0.02), so its
meta-networks cannot learn. `meta_reach` sets the rate to reach / S instead (`MetaRate`).
"""

from __future__ import annotations

import math

import keras

__all__ = [
    "MetaRate",
    "check_options",
    "fit_iterations",
    "meta_rate",
    "movement_bound",
    "planned_meta_steps",
    "run_meta_steps",
]


def check_options(meta_every: int, meta_steps: int, meta_warmup: int, meta_reach: float | None) -> None:
    """Check the meta schedule options of `L2TModel`.

    Raises:
        ValueError: a count that is not a whole number in range, or a reach that is not a positive number.

    """
    for option, value, least in (("meta_every", meta_every, 1), ("meta_steps", meta_steps, 1),
                                 ("meta_warmup", meta_warmup, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{option} must be a whole number of at least {least}, got {value!r}.")
    if meta_reach is not None and (isinstance(meta_reach, bool) or not 0 < meta_reach < math.inf):
        raise ValueError(f"meta_reach must be a positive number (None keeps the meta rate), got {meta_reach!r}.")


def planned_meta_steps(iterations: int, meta_every: int = 1, meta_steps: int = 1, meta_warmup: int = 0) -> int:
    """The meta steps of a run of `iterations` target iterations under a meta schedule.

    Args:
        iterations: target iterations (epochs x steps per epoch).
        meta_every: a meta iteration every this many iterations (the first included).
        meta_steps: meta steps per meta iteration.
        meta_warmup: meta steps before the first iteration.

    Returns:
        warmup + ceil(iterations / meta_every) x meta_steps.

    """
    return meta_warmup + math.ceil(iterations / meta_every) * meta_steps


def run_meta_steps(model, iterations: int) -> int:
    """The meta steps an `L2TModel` takes in `iterations` target iterations (0 for a method without phi)."""
    if not model.phi:
        return 0
    return planned_meta_steps(iterations, model.meta_every, model.meta_steps, model.meta_warmup)


def movement_bound(rate: float, steps: int) -> float:
    """About the most Adam can move one weight in `steps` steps at `rate`: rate x steps (see the module)."""
    return float(rate) * steps


def meta_rate(model) -> float:
    """The meta optimizer's current learning rate."""
    return float(model.meta_optimizer.learning_rate.numpy())  # (float() fails on a MirroredVariable)


def fit_iterations(params: dict) -> int:
    """The target iterations of a `fit` from its callbacks' `params` (epochs x steps per epoch).

    Raises:
        ValueError: `fit` does not know the number of steps per epoch.

    """
    epochs, steps = params.get("epochs"), params.get("steps")
    if not epochs or not steps:
        raise ValueError(
            "The meta schedule needs the run's length: call fit with epochs and data of known length, or pass "
            "steps_per_epoch (e.g. fit(train.repeat(), steps_per_epoch=...))."
        )
    return epochs * steps


class MetaRate(keras.callbacks.Callback):
    """At the start of `fit`, set an `L2TModel`'s meta rate to meta_reach / the run's planned meta steps.

    Does nothing when the model's `meta_reach` is None (the reference keeps Adam at 1e-4). With the rate so set,
    `movement_bound(rate, steps)` equals meta_reach: Adam can move each meta weight by about that much.
    """

    def on_train_begin(self, logs=None):
        """Scale the meta rate (Kingma and Ba 2015, Section 2.1: Adam's step is at most about the rate)."""
        model = self.model
        if getattr(model, "meta_reach", None) is None or not model.phi:
            return
        steps = run_meta_steps(model, fit_iterations(self.params))
        model.meta_optimizer.learning_rate = model.meta_reach / steps
