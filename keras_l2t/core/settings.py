"""Every run setting declared once: its default, kind, help, which runs it concerns and whether it enters the key.

`config.RunConfig` (its fields and checks), the comparison app's flags and a run's key are all derived from
`SETTINGS`, so a new setting is one `Setting(...)` line here (flax's `configs/default.py` and nanoGPT's
configurator are the models: one table of defaults, overridden by keyword or flag).

>>> from keras_l2t import settings
>>> settings.SETTINGS["batch_size"].default, settings.SETTINGS["batch_size"].flag
(64, '--batch-size')
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = [
    "Kind",
    "SETTINGS",
    "Setting",
    "add_flags",
    "choice",
    "devices",
    "fraction",
    "key_fields",
    "positive",
    "seconds",
    "split",
    "text",
    "whole",
    "yes_no",
]


@dataclasses.dataclass(frozen=True)
class Kind:
    """What values a setting takes: a check of a value and a parser of its command-line text.

    Args:
        describe: the values in words, for error messages ("a whole number of at least 1").
        accepts: whether a (non-None) value is valid.
        convert: turns command-line text into a value (ValueError when it cannot).
        annotation: the field's type, as `RunConfig` declares it.

    """

    describe: str
    accepts: Callable[[Any], bool]
    convert: Callable[[str], Any]
    annotation: str

    def parse(self, text: str):
        """The value of a flag's text; argparse's error (with what was expected) when it is not valid."""
        try:
            value = self.convert(text)
        except ValueError:
            value = None
        if value is None or not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe}, got {text!r}")
        return value


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole(least: int) -> Kind:
    """A whole number of at least `least`."""
    return Kind(
        f"a whole number of at least {least}",
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= least,
        int,
        "int",
    )


def positive() -> Kind:
    """A positive finite number."""
    return Kind("a positive number", lambda value: _number(value) and 0 < value < float("inf"), float, "float")


def split() -> Kind:
    """A validation split: a fraction in [0, 1) or a whole count of images."""

    def accepts(value) -> bool:
        return (isinstance(value, float) and 0 <= value < 1) or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        )

    def convert(text: str) -> float | int:
        value = float(text)
        if value >= 1 and value != int(value):
            raise ValueError(text)
        return int(value) if value >= 1 else value

    return Kind("a fraction in [0, 1) or a whole count of images", accepts, convert, "float | int")


def seconds() -> Kind:
    """A duration in seconds, 0 or more."""
    return Kind("a number of seconds >= 0", lambda value: _number(value) and 0 <= value < float("inf"), float, "float")


def fraction() -> Kind:
    """A fraction in [0, 1)."""
    return Kind("a fraction in [0, 1)", lambda value: _number(value) and 0 <= value < 1, float, "float")


def choice(*values: str) -> Kind:
    """One of a few words."""
    return Kind(f"one of {', '.join(values)}", lambda value: value in values, str, "str")


def text() -> Kind:
    """Any text (checked where it is used: a dataset, a backbone, a file)."""
    return Kind("text", lambda value: isinstance(value, str), str, "str")


def yes_no() -> Kind:
    """On or off (a flag without a value on the command line)."""
    return Kind("True or False", lambda value: isinstance(value, bool), bool, "bool")


def devices() -> Kind:
    """A number of devices, or "all"."""

    def accepts(value) -> bool:
        return value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)

    return Kind("a whole number of at least 1 or 'all'", accepts, lambda t: t if t == "all" else int(t), "int | str")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One run setting, declared once.

    Args:
        name: the `RunConfig` field (its flag is `--` + the name with dashes).
        default: the value when not given; None means "not set" (the setting says what that does).
        kind: its values (`Kind`).
        help: one line for the flag and the docs.
        optional: None is a valid value.
        key: "always" (changes the result), "never" (where and how it is kept) or "changed": added after runs
            were recorded, so it enters the key only when it differs from its default (those runs keep their keys).
        concerns: which runs it changes, from the run's resolved `Strategy` (None: every run); in the key of a
            run it does not concern it stands at its default, so it cannot split identical runs.
        flag: the app declares it as a flag (False: the app owns it, as a grid axis or its own option).
        none_word: on the command line, the word "none" means None (no pretrained weights); elsewhere "none" is
            a value of its own (`--augment none`).
        per_strategy: a strategy may declare its own default in `Strategy.options` (the field is None until the
            run's strategy is known).

    """

    name: str
    default: Any
    kind: Kind
    help: str
    optional: bool = False
    key: str = "always"
    concerns: Callable[[Any], bool] | None = None
    flag: bool = True
    none_word: bool = False
    per_strategy: bool = False

    @property
    def option(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> None:
        """Raise ValueError naming the setting and what it takes when `value` is not valid."""
        if value is None and self.optional:
            return
        if not self.kind.accepts(value):
            raise ValueError(f"{self.name} ({self.option}) must be {self.kind.describe}, got {value!r}.")


def _classic(strategy) -> bool:
    return strategy.family == "classic"


def _matching(strategy) -> bool:
    return strategy.family == "matching"


def _matches(strategy) -> bool:  # a matching method with a source to match (not scratch)
    return strategy.family == "matching" and strategy.pretrained


def _last_blocks(strategy) -> bool:
    return strategy.trainable == "last"


def _frozen(strategy) -> bool:  # the frozen backbone's head trains on cached features
    return strategy.trainable == "none"


def _meta(strategy) -> bool:
    return strategy.meta


_SETTINGS = (
    Setting("strategy", None, text(), "a registered strategy (see `strategies.names()`)", flag=False),
    Setting("dataset", "cifar10", text(), "a TFDS name (cifar10, ...) or an image folder"),
    Setting("data_dir", None, text(), "TFDS data directory (default: $TFDS_DATA_DIR)", optional=True),
    Setting("download", False, yes_no(), "let TFDS download the dataset"),
    Setting("backbone", "squeezenet1_1", text(), "the classic strategies' backbone", True, concerns=_classic),
    Setting("weights", "imagenet", text(), "its weights: imagenet (or another named set), a file, or none",
            True, concerns=_classic, none_word=True),
    Setting("source", "resnet32", text(), "the matching methods' pretrained source network", concerns=_matches),
    Setting("source_weights", "tinyimagenet", text(), "its weights: tinyimagenet, a file, or none", True,
            concerns=_matches, none_word=True),
    Setting("target", "vgg9", text(), "the matching methods' target network", concerns=_matching),
    Setting("family", None, choice("classic", "matching"), "the loop scratch trains with (None: the strategy's own; "
            "with matching, scratch trains like the matching methods, their fair baseline)", True),
    Setting("samples_per_class", None, whole(1), "N training images per class; None (all) for all", True,
            flag=False),
    Setting("imbalanced", False, yes_no(), "the last class gets N / 10 images"),
    Setting("validation", 0.1, split(), "validation split carved from train: a fraction, or a count if >= 1"),
    Setting("validation_groups", None, text(), "a regular expression for a group key in file names: "
            "near-duplicate images of one group stay on one side of the validation split", True),
    Setting("augment", "auto", text(), "training augmentation: auto (never mirrors), none, or a comma list of "
            "transforms (keras_l2t.datasets.augment)"),
    Setting("seed", 0, whole(0), "seeds the subset, the split, the initialisation and the shuffling", flag=False),
    Setting("epochs", None, whole(1), "training epochs; None for the strategy's default", True),
    Setting("batch_size", 64, whole(1), "images per batch"),
    Setting("image_size", None, whole(1), "input height and width; None for the network's default", True),
    Setting("learning_rate", None, positive(), "starting learning rate; None for the strategy's default", True),
    Setting("last_blocks", 2, whole(1), "blocks trained by fine_tune_last", concerns=_last_blocks,
            per_strategy=True),
    Setting("patience", None, whole(1), "early-stopping patience on validation accuracy, in epochs (None: train "
            "every epoch)", True),
    Setting("validate_every", 1, whole(1), "validate every k epochs (and at the first and last); the early-stop "
            "point is the best validated one", key="changed"),
    Setting("feature_views", 10, whole(1), "a frozen backbone's features are computed once per training image, "
            "for this many augmented views", key="changed",
            concerns=_frozen, per_strategy=True),
    Setting("meta_every", 1, whole(1), "L2T methods: the meta step every k iterations (1, the reference)",
            concerns=_meta, per_strategy=True),
    Setting("meta_steps", 1, whole(1), "L2T methods: meta steps per meta iteration, each on a fresh look-ahead",
            key="changed", concerns=_meta, per_strategy=True),
    Setting("meta_warmup", 0, whole(0), "L2T methods: meta steps on the first batch before the target trains",
            key="changed", concerns=_meta, per_strategy=True),
    Setting("meta_reach", None, positive(), "L2T methods: meta rate = this / the run's meta steps "
            "(keras_l2t.training.meta_schedule); None keeps the reference's 1e-4", True, "changed", _meta),
    Setting("fine_tune_epochs", 0, whole(0), "two-phase recipe: after epochs, unfreeze the whole backbone and "
            "train this many more", concerns=_classic, per_strategy=True),
    Setting("fine_tune_learning_rate", 1e-5, positive(), "the second phase's rate", concerns=_classic,
            per_strategy=True),
    Setting("weight_decay", None, positive(), "decoupled weight decay (classic: AdamW) or SGD's L2 term "
            "(matching); None for the strategy's default", True, "changed"),
    Setting("warmup_epochs", 0, whole(0), "linear warm-up of the learning rate over this many epochs",
            key="changed"),
    Setting("matching_weight", None, positive(), "the matching methods' weight beta of the matching loss; None "
            "for the method's default", True, "changed", _matches),
    Setting("dropout", 0.2, fraction(), "the classic head's dropout rate", key="changed", concerns=_classic),
    Setting("head_init", "glorot_uniform", choice("glorot_uniform", "zeros"), "the classic head's initial "
            "kernel; zeros starts every prediction uniform (loss log C) however large the backbone's features",
            key="changed", concerns=_classic),
    Setting("grayscale", False, yes_no(), "classic: the network sees one luminance channel (for networks from "
            "scratch, e.g. lenet5)", key="changed", concerns=_classic),
    Setting("equalize", False, yes_no(), "classic: histogram-equalise each image at the model's input",
            key="changed", concerns=_classic),
    Setting("devices", 1, devices(), "train on N devices (GPUs, else logical CPUs) or all, under MirroredStrategy; "
            "batch_size is the global batch", key="never"),
    Setting("mixed_precision", None, choice("bfloat16", "float16"), "Keras mixed precision (L2T methods keep their "
            "meta step in float32)", True, "changed"),
    Setting("out", "runs", text(), "the output folder", key="never", flag=False),
    Setting("verbose", 1, whole(0), "Keras' progress output (0 silent, 1 bar, 2 a line per epoch)", key="never",
            flag=False),
    Setting("backup_every", 1, whole(1), "back each run up every this many epochs", key="never"),
    Setting("backup_seconds", 0.0, seconds(), "and no sooner than this many seconds after its previous backup",
            key="never"),
    Setting("keep_model", True, yes_no(), "save the validation-best model under <out>/models", key="never",
            flag=False),
)  # fmt: skip
SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _SETTINGS}


def key_fields(values: dict, strategy, settings: dict[str, Setting] | None = None) -> dict:
    """The settings that name a run's result, as its key hashes them.

    Args:
        values: the run's settings by name.
        strategy: the run's resolved `Strategy` (which settings concern it).
        settings: the declarations (default `SETTINGS`).

    Returns:
        The key's fields: "never" settings left out, settings that do not concern the run at their default,
        "changed" settings only when they differ from it.

    """
    fields = {}
    for name, setting in (settings or SETTINGS).items():
        if setting.key == "never":
            continue
        concerned = setting.concerns is None or setting.concerns(strategy)
        value = values[name] if concerned else setting.default
        if setting.key == "changed" and value == setting.default:
            continue
        fields[name] = value
    return fields


def add_flags(parser: argparse.ArgumentParser, settings: dict[str, Setting] | None = None) -> None:
    """Declare every setting with `flag=True` as a flag of `parser`; a flag not given is absent from the namespace.

    Args:
        parser: the app's parser.
        settings: the declarations (default `SETTINGS`).

    """
    for setting in (settings or SETTINGS).values():
        if not setting.flag:
            continue
        default = "" if setting.default is None else f" (default {setting.default})"
        if setting.kind.annotation == "bool":
            parser.add_argument(setting.option, action="store_true", default=argparse.SUPPRESS, help=setting.help)
            continue
        parser.add_argument(
            setting.option, type=_parser(setting), help=setting.help + default, default=argparse.SUPPRESS
        )


def _parser(setting: Setting) -> Callable[[str], Any]:
    """The flag's parser: "none" is None where None is a value of the setting (random weights, no limit)."""

    def parse(text: str):
        if setting.none_word and text == "none":
            return None
        return setting.kind.parse(text)

    return parse
