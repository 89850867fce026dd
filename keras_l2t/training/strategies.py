"""The transfer strategies by name, each a compiled `keras.Model` ready for `fit`, `evaluate` and `predict`.

>>> from keras_l2t import strategies
>>> model = strategies.build("feature_extraction", backbone="mobilenet_v2", num_classes=2,
...                          weights="imagenet", input_shape=(160, 160, 3))

Classic strategies (a pretrained backbone, global average pooling, dropout and a new Dense head):
`feature_extraction` (backbone frozen), `fine_tune_last` (the last N blocks trainable), `full_fine_tune`
(everything trainable at a lower rate; in both, BatchNorm layers stay frozen, so in inference mode) and `scratch`
(the same network from random initialisation). Feature-matching methods (`keras_l2t.training.l2t.L2TModel`): `ufm`,
`fm_uniform`, `l2t_ww`, `l2t_www`. The Keras guide's two-phase recipe: train with `feature_extraction`,
then call `unfreeze(model)` and train again at a low rate.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping

import keras

from keras_l2t.core import user_modules
from keras_l2t.core.settings import SETTINGS
from keras_l2t.training import builders
from keras_l2t.training.freezing import trainable_layers, unfreeze
from keras_l2t.training.l2t import META_METHODS, L2TModel
from keras_l2t.training.meta_health import MetaHealth
from keras_l2t.training.meta_schedule import MetaRate
from keras_l2t.training.optim import linear_warmup, reference_cosine
from keras_l2t.training.regularizers import Penalties

__all__ = [
    "FAMILIES",
    "MATCHING_LEARNING_RATE",
    "Strategy",
    "build",
    "callbacks",
    "names",
    "register",
    "resolve",
    "scratch_family",
    "spec",
    "trainable_layers",
    "unfreeze",
]


FAMILIES = ("classic", "matching")
MATCHING_LEARNING_RATE = 0.1  # the L2T-ww reference: SGD from 0.1, for every method it compares (scratch too)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way of reusing a pretrained network, and everything a run needs to know about it.

    Args:
        name: the registry name.
        family: "classic" (a backbone with a new head, Adam) or "matching" (L2TModel, PyTorch-style SGD).
        description: one line for tables and help texts.
        learning_rate: the default starting learning rate.
        trainable: for classic strategies, which backbone layers train: "none", "last" or "all".
        pretrained: whether the (classic) backbone starts from pretrained weights.
        epochs: a run's default length. `feature_extraction` trains its head on cached features
            (`keras_l2t.training.features`), where an epoch costs milliseconds: 100 epochs let the head converge.
        penalties: for classic strategies, the regularised fine-tuning penalties added to the cross-entropy
            (`keras_l2t.training.regularizers`: L2-SP, DELTA, BSS); None for plain cross-entropy.
        options: the strategy's own defaults of run settings (`settings.SETTINGS` with `per_strategy`), e.g.
            `{"fine_tune_epochs": 10}`; they reach `RunConfig`, the app's flags and the key through the settings.
        families: the loops it can train with; `scratch` trains with both (with "matching" it is the matching
            methods' fair baseline: their loop, optimizer and schedule).
        search_space: the parameters tuning searches (`tuning_space.Parameter`); () for its family's.
        builder: builds and compiles its model from `(strategy, num_classes, options)`; None for its family's.

    """

    name: str
    family: str
    description: str
    learning_rate: float
    trainable: str = "all"
    pretrained: bool = True
    epochs: int = 15
    penalties: Penalties | None = None
    options: Mapping = dataclasses.field(default_factory=dict, hash=False)
    families: tuple[str, ...] = ()
    search_space: tuple = dataclasses.field(default=(), hash=False)
    builder: Callable | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown family {self.family!r} of {self.name!r}; choose {' or '.join(FAMILIES)}.")
        unknown = [name for name in self.options if name not in SETTINGS or not SETTINGS[name].per_strategy]
        if unknown:
            settable = [name for name, setting in SETTINGS.items() if setting.per_strategy]
            raise ValueError(
                f"{self.name}: {', '.join(unknown)} cannot be a strategy's option; choose from "
                f"{', '.join(settable)} (or declare a new setting in keras_l2t.core.settings)."
            )
        if not self.families:
            object.__setattr__(self, "families", (self.family,))

    @property
    def meta(self) -> bool:
        """Whether the method learns meta-networks by the bilevel step (`L2TModel` owns which methods do)."""
        return self.family == "matching" and self.name in META_METHODS


_CLASSIC = (
    Strategy("feature_extraction", "classic", "pretrained backbone frozen, new head trained", 1e-3, "none", epochs=100),
    Strategy("fine_tune_last", "classic", "last N blocks and the head trained, the rest frozen", 3e-4, "last"),
    Strategy("full_fine_tune", "classic", "every layer trained from the pretrained weights", 1e-4, "all"),
    Strategy("scratch", "classic", "the same network trained from random initialisation", 1e-3, "all", False,
             families=FAMILIES),
    Strategy("lp_ft", "classic", "LP-FT (Kumar et al. 2022): the frozen backbone's head first, then every layer",
             1e-3, "none", epochs=100, options={"fine_tune_epochs": 10, "fine_tune_learning_rate": 1e-5}),
    # the regularised fine-tuning baselines (Transfer-Learning-Library's tllib.regularization): full fine-tuning's
    # rate and layers, plus a penalty; strengths are starting points for tuning, not the papers' tuned values
    Strategy("l2_sp", "classic", "full fine-tuning pulled towards the pretrained weights, L2-SP (Li et al. 2018)",
             1e-4, "all", penalties=Penalties(starting_point=0.01, head=0.01)),
    Strategy("delta", "classic", "full fine-tuning keeping attention-weighted feature maps, DELTA (Li et al. 2019)",
             1e-4, "all", penalties=Penalties(feature_maps=0.01, head=0.01)),
    Strategy("bss", "classic", "full fine-tuning shrinking the smallest feature singular value, BSS (Chen et al. 2019)",
             1e-4, "all", penalties=Penalties(spectral=0.001, smallest=1)),
)  # fmt: skip
_MATCHING = tuple(
    Strategy(name, "matching", description, MATCHING_LEARNING_RATE)
    for name, description in (
        ("ufm", "FitNets-style unweighted feature matching (Romero et al. 2014)"),
        ("fm_uniform", "all-pairs feature matching with uniform weights"),
        ("l2t_ww", "L2T-ww: meta-learned what and where (Jang et al. 2019)"),
        ("l2t_www", "L2T-www: L2T-ww plus a which-pixels meta-network"),
        ("fm_single", "FitNets: one hint pair, middle source stage to middle target tap (Romero et al. 2015)"),
        ("at", "attention transfer between equal-resolution pairs (Zagoruyko & Komodakis 2017)"),
        ("lwf", "Learning without Forgetting: a second head keeps the source's 200 classes (Li & Hoiem 2017)"),
        ("lwf_at", "LwF plus attention transfer"),
    )
)
_REGISTRY = {strategy.name: strategy for strategy in _CLASSIC + _MATCHING}


def register(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add a strategy to the registry (from a notebook too), so that `build`, grids and the app know it.

    Ray workers import the registry afresh: define the strategy in an importable module and name it with the
    app's `--import` (`user_modules`: each worker imports it before its run), as the README shows.

    Args:
        strategy: its declaration.
        replace: allow replacing a registered strategy of the same name.

    Returns:
        The strategy.

    Raises:
        ValueError: the name is taken (and not `replace`).

    """
    if strategy.name in _REGISTRY and not replace and _REGISTRY[strategy.name] != strategy:
        raise ValueError(f"A strategy {strategy.name!r} is registered already; pass replace=True to replace it.")
    _REGISTRY[strategy.name] = strategy
    return strategy


def names(family: str | None = None) -> list[str]:
    """List the registered strategies, in registration order.

    Args:
        family: "classic" or "matching" to list only those; None for all.

    """
    return [name for name, strategy in _REGISTRY.items() if family in (None, strategy.family)]


def spec(name: str) -> Strategy:
    """The registered `Strategy` of a name (in a worker process, after importing the driver's user modules).

    Raises:
        KeyError: unknown name, with close matches and every registered name.

    """
    if name not in _REGISTRY:
        user_modules.import_modules()  # a Ray worker meets a user's strategy first here: $KERAS_L2T_IMPORTS
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"Unknown strategy {name!r}.{hint} Registered strategies: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def resolve(name: str, family: str | None = None) -> Strategy:
    """The strategy as a run trains it: the one place that decides a run's family (loop, optimizer, rate).

    `scratch` is the only strategy in both families: with "matching" it trains the target network from random
    initialisation with the matching methods' loop, optimizer and schedule, so that it is their fair baseline.

    Args:
        name: a registered strategy.
        family: None for the strategy's own family, or "classic" / "matching".

    Raises:
        KeyError: unknown name. ValueError: unknown family, or a family the strategy cannot train with.

    """
    strategy = spec(name)
    if family not in (None, *FAMILIES):
        raise ValueError(f"Unknown family {family!r}; choose {' or '.join(map(repr, FAMILIES))}.")
    if family in (None, strategy.family):
        return strategy
    if family not in strategy.families:
        raise ValueError(f"{name} trains only with the {strategy.family} loop, not with {family!r}.")
    return dataclasses.replace(strategy, family=family, learning_rate=MATCHING_LEARNING_RATE)


def scratch_family(strategy_names, family: str | None = None) -> str:
    """The family `scratch` trains with beside these strategies.

    The requested one; else "matching" when a matching method is among them (a fair comparison), else "classic".

    Raises:
        ValueError: unknown family.

    """
    if family is not None:
        return resolve("scratch", family).family
    return "matching" if any(spec(name).family == "matching" for name in strategy_names) else "classic"


def build(
    name: str,
    *,
    num_classes: int,
    family: str | None = None,
    backbone: str | None = None,
    weights="imagenet",
    input_shape=None,
    learning_rate: float | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    last_blocks: int = 2,
    train_batch_norm: bool = False,
    dropout: float = 0.2,
    head_init: str = "glorot_uniform",
    optimizer=None,
    source: str = "resnet32",
    source_weights="tinyimagenet",
    target: str | None = None,
    weight_decay: float | None = None,
    warmup_epochs: int = 0,
    matching_weight: float | None = None,
    grayscale: bool = False,
    equalize: bool = False,
    **matching_options,
) -> keras.Model:
    """Build a strategy's model, compiled with its default optimizer, loss and accuracy metric.

    Args:
        name: a registered strategy (see `names()`).
        num_classes: classes of the task.
        family: the loop to train with (see `resolve`); `family="matching"` trains `scratch` like the matching
            methods (an `L2TModel` without matching, the same optimizer and schedule), as their baseline.
        backbone: for classic strategies, a registered backbone.
        weights: the backbone's pretrained weights (None, a named pretraining such as "imagenet", or a file).
        input_shape: (height, width, 3); default the backbone's.
        learning_rate: the starting rate; default the strategy's (`resolve(name, family).learning_rate`).
        epochs: with `steps_per_epoch`, cosine-decay a classic strategy's rate to 0 over the run.
        steps_per_epoch: batches per epoch.
        last_blocks: for `fine_tune_last`, how many of the backbone's last blocks train.
        train_batch_norm: let BatchNorm of a pretrained backbone use batch statistics (default: inference).
        dropout: the head's dropout rate.
        head_init: the head's initial kernel, "glorot_uniform" or "zeros" (every prediction uniform at the start).
        optimizer: replaces the default optimizer.
        source: for matching methods, the pretrained source backbone.
        source_weights: its weights (named or a file).
        target: for matching methods, the target backbone with its own head (default `backbone`).
        weight_decay: classic: AdamW's decoupled decay (None: Adam, none); matching: SGD's L2 term (None: 1e-4).
        warmup_epochs: classic: the rate rises linearly from 0 over this many epochs before its cosine decay (the
            matching methods' warm-up lives in their schedule, see `callbacks`).
        matching_weight: matching methods: beta, the weight of the matching loss (None: the method's own, 0.5 or 1).
        grayscale: classic: the network sees one luminance channel (`augment.input_filters`).
        equalize: classic: histogram-equalise each image at the model's input.
        **matching_options: passed to `L2TModel` (pairs, beta, inner_steps, ...).

    Returns:
        A compiled `keras.Model` (an `L2TModel` for the matching family).

    Raises:
        KeyError: unknown strategy or backbone. ValueError: missing backbone, too-small input, wrong family.

    """
    strategy = resolve(name, family)
    options = {
        "backbone": backbone,
        "weights": weights,
        "input_shape": input_shape,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "last_blocks": last_blocks,
        "train_batch_norm": train_batch_norm,
        "dropout": dropout,
        "head_init": head_init,
        "optimizer": optimizer,
        "source": source,
        "source_weights": source_weights,
        "target": target or backbone,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "matching_weight": matching_weight,
        "grayscale": grayscale,
        "equalize": equalize,
        "matching": matching_options,
    }
    builder = strategy.builder or {"classic": builders.classic, "matching": builders.matching}[strategy.family]
    return builder(strategy, num_classes, options)


def callbacks(model: keras.Model, epochs: int, probe=None, log_dir: str | None = None, warmup_epochs: int = 0) -> list:
    """Callbacks a strategy's model needs during `fit`.

    Keras' `TerminateOnNaN` (a diverged run stops instead of training on NaN), and for L2TModel the reference
    cosine schedule (a classic strategy's schedule lives in its optimizer); for L2T-ww / L2T-www also the meta
    rate scaled to the run when the model asks for it (`meta_schedule.MetaRate`) and the health check that warns
    at the end of `fit` when the meta-networks could not or did not learn (`meta_health.MetaHealth`).

    Args:
        model: a model from `build`.
        epochs: the run's length.
        probe: for L2T, a fixed preprocessed batch (a few validation images) to measure the meta-networks on;
            None measures their weights only.
        log_dir: for L2T, the TensorBoard run folder of the health figures (`<log_dir>/meta`); None: none.
        warmup_epochs: for L2TModel, the rate rises linearly over this many epochs before the cosine schedule.

    """
    stop = [keras.callbacks.TerminateOnNaN()]
    if isinstance(model, L2TModel):
        rate = float(model.optimizer.learning_rate.numpy())  # (float() fails on a MirroredVariable)
        meta = [MetaRate(), MetaHealth(probe, log_dir)] if model.phi else []
        schedule = linear_warmup(reference_cosine(epochs, rate), warmup_epochs)
        return stop + [keras.callbacks.LearningRateScheduler(schedule), *meta]
    return stop
