"""RunConfig: everything that defines one run, checked when it is made, with its key and its name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from keras_l2t.core import settings
from keras_l2t.core.paths import RunPaths
from keras_l2t.datasets import augment
from keras_l2t.training import strategies

__all__ = ["ALL_SAMPLES", "MAX_IMAGE_SIZE", "RunConfig", "parse_samples", "samples_label"]

ALL_SAMPLES = "all"  # how tables, file names and the command line spell samples_per_class=None
MAX_IMAGE_SIZE = 1024  # pixels a side: over 3x every network's default input (32 to 299), no memory blow-up


def samples_label(samples: int | None) -> int | str:
    """N as tables and run names show it: the number, or "all" for the whole training set."""
    return ALL_SAMPLES if samples is None else int(samples)


def parse_samples(value) -> int | None:
    """N from a table, a run name or the command line: a number, or None for "all" (or None)."""
    return None if value is None or str(value) == ALL_SAMPLES else int(value)


class _RunMethods:
    """What a run's settings imply: its strategy as trained, its networks, key, name and paths."""

    def __post_init__(self):
        if self.epochs is None:
            self.epochs = self.resolved.epochs
        options = self.resolved.options
        for setting in settings.SETTINGS.values():
            if setting.per_strategy and getattr(self, setting.name) is None:
                setattr(self, setting.name, options.get(setting.name, setting.default))
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        for setting in settings.SETTINGS.values():
            setting.check(getattr(self, setting.name))
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:  # before any image is allocated
            raise ValueError(
                f"image_size (--image-size) must be at most {MAX_IMAGE_SIZE}, got {self.image_size}: one decoded "
                f"image would take {3 * self.image_size**2 / 2**20:.0f} MB (the networks here default to 32 to 299)."
            )
        augment.augment_transforms(self.augment, 32)  # an unknown transform fails here, before any work

    @property
    def resolved(self) -> strategies.Strategy:
        """The strategy as this run trains it (`strategies.resolve`: family, default rate, meta or not)."""
        return strategies.resolve(self.strategy, self.family)

    @property
    def resolved_family(self) -> str:
        """The family this run trains with."""
        return self.resolved.family

    @property
    def trained_network(self) -> str:
        """The network that learns: the classic backbone, or the matching target."""
        return self.target if self.resolved_family == "matching" else self.backbone

    @property
    def network(self) -> str:
        """The networks, for tables: the backbone, or `source->target` (the target alone when nothing matches)."""
        if self.resolved_family == "matching" and self.strategy != "scratch":
            return f"{self.source}->{self.target}"
        return self.trained_network

    @property
    def key(self) -> str:
        """The SHA-1 (all 40 hex digits) of every field that changes the result (not where and how it is kept).

        Finished runs are matched by it, so it is never shortened: two configs of a grid share a key only if
        they are the same run. Rows of results files written before (6-digit keys, and configs without the
        augment, validation_groups and meta_every fields, whose defaults changed what a run does) are not
        matched: their runs are redone. Fields added since (`validate_every`, `feature_views`) enter the key only
        when they differ from what earlier runs did, so those runs keep their keys.
        """
        fields = settings.key_fields(dataclasses.asdict(self), self.resolved)
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    @property
    def paths(self) -> RunPaths:
        """Where the run writes (`keras_l2t.core.paths`)."""
        return RunPaths(self.out, self.name)

    @property
    def name(self) -> str:
        """A unique, readable run name (its log folder): strategy, network, data, N, epochs, seed and `key`."""
        dataset = os.path.basename(os.path.normpath(self.dataset))
        samples = samples_label(self.samples_per_class)
        imbalance = "-imbalanced" if self.imbalanced else ""
        network = self.network.replace("->", "-")
        return f"{self.strategy}-{network}-{dataset}-n{samples}{imbalance}-e{self.epochs}-s{self.seed}-{self.key[:10]}"


def _docstring() -> str:
    lines = ["Everything that defines one run (its fields are `settings.SETTINGS`, declared there once).", "", "Args:"]
    lines += [f"    {setting.name}: {setting.help}." for setting in settings.SETTINGS.values()]
    return "\n".join(lines)


def make_run_config(declared: dict[str, settings.Setting] | None = None) -> type:
    """The run config class of a set of setting declarations: a dataclass with one field per setting.

    Args:
        declared: the declarations (default `settings.SETTINGS`).

    Returns:
        A dataclass with `_RunMethods`' checks, key and name.

    """
    fields = []
    for setting in (declared or settings.SETTINGS).values():
        if setting.default is None and not setting.optional and not setting.per_strategy:
            fields.append((setting.name, setting.kind.annotation))  # required (the strategy)
            continue
        default = None if setting.per_strategy else setting.default
        fields.append((setting.name, setting.kind.annotation, dataclasses.field(default=default)))
    return dataclasses.make_dataclass("RunConfig", fields, bases=(_RunMethods,), namespace={"__doc__": _docstring()})


RunConfig = make_run_config()
RunConfig.__module__ = __name__
