"""Search spaces of tuning: the settings searched per strategy, their bounds, and the user's overrides.

A strategy declares its own (`strategies.Strategy.search_space`); otherwise its family's default applies. Every
parameter is a `RunConfig` field, searched by Optuna between its bounds (`keras_l2t.running.tuning`).

>>> from keras_l2t import tuning_space
>>> tuning_space.parse_space("learning_rate=1e-4:1e-1:log,warmup_epochs=0:5")[1]
Parameter(name='warmup_epochs', low=0, high=5, log=False, kind='int')
"""

from __future__ import annotations

import dataclasses
import re

from keras_l2t.running.config import RunConfig

__all__ = ["META_SCHEDULE", "Parameter", "parse_space", "resolve_space", "search_space"]


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One tuned setting: a `RunConfig` field searched between two bounds.

    Args:
        name: the `RunConfig` field.
        low: the smallest value tried.
        high: the largest value tried.
        log: search on a log scale (rates, decays, loss weights).
        kind: "float" or "int".

    """

    name: str
    low: float
    high: float
    log: bool = False
    kind: str = "float"

    def __post_init__(self):
        if self.kind not in ("float", "int"):
            raise ValueError(f"Parameter {self.name}: kind must be 'float' or 'int', got {self.kind!r}.")
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(
                f"Parameter {self.name}: needs low < high{' and low > 0 on a log scale' if self.log else ''}, got "
                f"{self.low} and {self.high}."
            )

    def distribution(self):
        """Its Optuna distribution."""
        optuna = import_optuna()

        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)


_RATE_AND_DECAY = {
    "classic": (Parameter("learning_rate", 1e-5, 1e-2, log=True), Parameter("weight_decay", 1e-6, 1e-2, log=True)),
    "matching": (Parameter("learning_rate", 1e-3, 0.3, log=True), Parameter("weight_decay", 1e-5, 1e-2, log=True)),
}
WARMUP = Parameter("warmup_epochs", 0, 10, kind="int")
# The L2T meta schedules (issue 37, `training/meta_schedule`): how far the meta-networks may move in the run
# (meta_reach: 1.0 made the thesis routine diverge, docs/meta_learning.md), meta steps per meta iteration, and meta
# steps before the target trains. Not in the default space: a study searches it with the target's recipe fixed.
META_SCHEDULE = (
    Parameter("meta_reach", 0.03, 1.0, log=True),
    Parameter("meta_steps", 1, 3, kind="int"),
    Parameter("meta_warmup", 0, 20, kind="int"),
)
MATCHING_WEIGHT = Parameter("matching_weight", 0.05, 5.0, log=True)


def search_space(strategy: str, family: str | None = None) -> tuple[Parameter, ...]:
    """The parameters tuning searches for a strategy: its own declared space, else its family's default.

    Classic: the learning rate (Adam, 1e-5 to 1e-2) and weight decay (1e-6 to 1e-2), log scales. Matching: the
    SGD rate (1e-3 to 0.3), weight decay (1e-5 to 1e-2), warm-up epochs (0 to 10) and, for methods that match
    (not scratch), the matching weight beta (0.05 to 5).

    Args:
        strategy: a registered strategy.
        family: the family it trains with (scratch trains with both); None for its own.

    Returns:
        The parameters.

    """
    from keras_l2t.training import strategies

    resolved = strategies.resolve(strategy, family)
    own = tuple(getattr(resolved, "search_space", ()) or ())
    if own:
        return own
    if resolved.family == "classic":
        return _RATE_AND_DECAY["classic"]
    return _RATE_AND_DECAY["matching"] + (WARMUP,) + (() if strategy == "scratch" else (MATCHING_WEIGHT,))


def parse_space(space) -> tuple[Parameter, ...]:
    """User overrides of a search space, from a dict or text like "learning_rate=1e-4:1e-1:log,warmup_epochs=0:5".

    Args:
        space: None; a dict name -> Parameter or (low, high[, "log"]); or text "name=low:high[:log],...". Bounds
            written as whole numbers make an integer parameter.

    Returns:
        The parameters.

    Raises:
        ValueError: a name that is not a `RunConfig` field, or bounds that do not parse or are not low < high.

    """
    if not space:
        return ()
    if isinstance(space, str):
        items = {}
        for part in filter(None, (item.strip() for item in space.split(","))):
            name, _, bounds = part.partition("=")
            if not bounds:
                raise ValueError(f"Search space item {part!r}: write name=low:high or name=low:high:log.")
            items[name.strip()] = tuple(bounds.split(":"))
        space = items
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    parameters = []
    for name, value in space.items():
        if name not in fields:
            raise ValueError(f"Search space: {name!r} is not a run setting; choose among {', '.join(sorted(fields))}.")
        parameters.append(value if isinstance(value, Parameter) else _parameter(name, value))
    return tuple(parameters)


def _parameter(name: str, bounds) -> Parameter:
    bounds = [str(bound).strip() for bound in bounds]
    log = len(bounds) == 3 and bounds[2] == "log"
    if len(bounds) != 2 + log:
        raise ValueError(f"Search space: {name}={':'.join(bounds)}; write {name}=low:high or {name}=low:high:log.")
    whole = all(re.fullmatch(r"-?[0-9]+", bound) for bound in bounds[:2])
    try:
        low, high = (int(bound) if whole else float(bound) for bound in bounds[:2])
    except ValueError:
        raise ValueError(f"Search space: {name} bounds {bounds[0]!r} and {bounds[1]!r} must be numbers.") from None
    return Parameter(name, low, high, log=log, kind="int" if whole else "float")


def resolve_space(config: RunConfig, space=None, echo=print) -> tuple[Parameter, ...]:
    """The strategy's space with the user's overrides, keeping only parameters this version of `RunConfig` has.

    Args:
        config: the trials' base config (its strategy, family and epochs).
        space: overrides (see `parse_space`); they replace parameters of the same name and add others.
        echo: where the warning about skipped parameters goes.

    Returns:
        The parameters searched; `warmup_epochs` is capped at half the run's epochs.

    """
    merged = {parameter.name: parameter for parameter in search_space(config.strategy, config.resolved_family)}
    merged.update({parameter.name: parameter for parameter in parse_space(space)})
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    skipped = [name for name in merged if name not in fields]
    if skipped:
        echo(f"warning: {config.strategy}: {', '.join(skipped)} not tuned (not a setting of this version's RunConfig)")
    if "warmup_epochs" in merged and merged["warmup_epochs"].high > config.epochs // 2:
        warmup = merged["warmup_epochs"]
        merged["warmup_epochs"] = dataclasses.replace(warmup, high=max(config.epochs // 2, warmup.low + 1))
    return tuple(parameter for name, parameter in merged.items() if name in fields)


def import_optuna():
    """Optuna, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError('Tuning needs Optuna: pip install "keras_l2t[tune]" (or pip install optuna).') from None
    return optuna
