"""Comparison presets: a preset is a tiny dict of grid settings (strategies, N, seeds) and `RunConfig` fields.

>>> from keras_l2t import presets
>>> presets.get_config("quick")["seeds"]
[0, 1, 2, 3]
"""

from __future__ import annotations

import copy

from keras_l2t import strategies

__all__ = ["MATCHING_ROUTINE", "PRESETS", "get_config", "names"]

# L2T-ww's CIFAR routine: batch 128, pad-4 crop + horizontal flip; a backup every 10 epochs (one costs ~0.5 s)
MATCHING_ROUTINE = {"batch_size": 128, "validation": 1000, "backup_every": 10, "augment": "crop,flip"}
PRESETS = {
    "course": {
        "strategies": ["feature_extraction", "fine_tune_last", "full_fine_tune", "scratch"],
        "samples_per_class": [None],
        "seeds": [0],
        "epochs": 15,
        "batch_size": 64,
        "image_size": 64,
        "validation": 5000,
        "backbone": "squeezenet1_1",
        "augment": "crop,flip",  # CIFAR-10, where mirroring changes no class
    },
    "thesis": {
        "strategies": ["scratch", "ufm", "l2t_ww", "l2t_www"],
        "samples_per_class": [10, 30, 50, 100, 150],
        "seeds": list(range(30)),
        "epochs": 200,
        "family": "matching",
        **MATCHING_ROUTINE,
    },
    "quick": {  # 4 seeds: the fewest with which a two-sided Mann-Whitney test can reach p < 0.05
        "strategies": ["scratch", "ufm", "l2t_ww", "l2t_www"],
        "samples_per_class": [10, 20],
        "seeds": [0, 1, 2, 3],
        "epochs": 10,
        "family": "matching",
        **MATCHING_ROUTINE,
        "validation": 500,
    },
}


def names() -> list[str]:
    """The preset names."""
    return list(PRESETS)


def get_config(name: str | None) -> dict:
    """A copy of a preset's settings; None gives the `RunConfig` defaults with every classic strategy.

    Raises:
        KeyError: unknown preset, listing the presets.

    """
    if name is None:
        return {"strategies": strategies.names("classic")}
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return copy.deepcopy(PRESETS[name])
