"""Comparison presets: a preset is a tiny dict of grid settings (strategies, N, seeds) and `RunConfig` fields.

>>> from keras_l2t import presets
>>> presets.get_config("thesis")["samples_per_class"]
[10, 30, 50, 100, 150]
"""

from __future__ import annotations

import copy

from keras_l2t.training import strategies

__all__ = ["MATCHING_ROUTINE", "PRESETS", "QUICK_TUNED", "own_settings", "get_config", "names", "routine"]

# L2T-ww's CIFAR routine: batch 128, pad-4 crop + horizontal flip. At N = 10 an epoch is one step (0.6 s for
# scratch), a validation pass of 1,000 images costs about 3 and a backup 2 (measured: benchmarks/run_cost.py), so
# validation runs every 20 epochs and a backup at most once a minute.
MATCHING_ROUTINE = {
    "batch_size": 128, "validation": 1000, "validate_every": 20, "backup_every": 1, "backup_seconds": 60,
    "augment": "crop,flip",
}  # fmt: skip
# The quick preset's matching recipes, tuned on CIFAR-10 validation at N = 10 (issue 35: 8 trials each, 60 epochs;
# the study is docs/tuning_quick_n10.db, read in docs/tuning.md), to 3 significant figures. The reference rate of
# 0.1 without warm-up sent every method's validation loss to 1e3-1e4 around epoch 10; the thesis keeps it.
QUICK_TUNED = {
    "scratch": {"learning_rate": 0.0158, "weight_decay": 2.95e-5, "warmup_epochs": 1},
    "fm_uniform": {"learning_rate": 0.0229, "weight_decay": 1.4e-3, "warmup_epochs": 6, "matching_weight": 0.615},
    "l2t_ww": {"learning_rate": 0.0229, "weight_decay": 1.4e-3, "warmup_epochs": 6, "matching_weight": 0.615},
}
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
    "traffic_signs": {  # the course's LeNet recipe for a 43-class traffic-sign benchmark, from its description
        "strategies": ["scratch"],
        "samples_per_class": [None],
        "seeds": [0],
        "family": "classic",
        "backbone": "lenet5",
        "weights": None,
        "image_size": 32,
        "grayscale": True,  # 32x32x1 input
        "equalize": True,  # histogram equalisation
        "augment": "rotation,blur",  # never a mirror: keep-left and keep-right signs
        "dropout": 0.3,  # keep probability 0.7
        "learning_rate": 1e-3,  # Adam
        "batch_size": 128,
        "epochs": 20,
    },
    "thesis": {
        "strategies": ["scratch", "ufm", "l2t_ww", "l2t_www"],
        "samples_per_class": [10, 30, 50, 100, 150],
        "seeds": list(range(30)),
        "epochs": 200,
        "family": "matching",
        **MATCHING_ROUTINE,
    },
    # 33 min on 2 CPU cores (28 with Ray, 2 runs at once): N = 10, 4 seeds (the fewest for Mann-Whitney p < 0.05)
    "quick": {
        "parts": {
            "classic": {  # epochs: each strategy's default (the frozen backbone's head: 100 on cached features)
                "description": "SqueezeNet 1.1 (ImageNet) frozen with a new head, or the same network from scratch",
                "strategies": ["feature_extraction", "scratch"],
                "samples_per_class": [10],
                "seeds": [0, 1, 2, 3],
                "family": "classic",
                "backbone": "squeezenet1_1",
                "weights": "imagenet",
                "image_size": 64,
                "batch_size": 32,
                "validation": 500,
                "augment": "crop,flip",
                # chosen on validation (tuning seeds 1000-1002): 40.3 % with a zero head against 31.9 % with
                # Glorot's, whose first epochs' validation loss was 11-12 on SqueezeNet's large features
                "per_strategy": {"feature_extraction": {"head_init": "zeros"}},
            },
            "matching": {  # the meta step every 5 iterations: 3x cheaper, as accurate at N = 10 (README)
                "description": "vgg9 from scratch, or taught by resnet32 (Tiny ImageNet) with fm_uniform or L2T-ww",
                "strategies": ["scratch", "fm_uniform", "l2t_ww"],
                "samples_per_class": [10],
                "seeds": [0, 1, 2, 3],
                "epochs": 60,
                "family": "matching",
                **MATCHING_ROUTINE,
                "validation": 500,
                "validate_every": 10,
                "meta_every": 5,
                "per_strategy": QUICK_TUNED,  # a setting the user gives applies to every strategy instead
            },
        },
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


def routine(name: str, part: str) -> dict:
    """A preset part's run settings without its grid: what every run of that part shares, to run at another N.

    Args:
        name: the preset, e.g. "quick".
        part: its part, e.g. "matching".

    Returns:
        The part's settings less its description, strategies, per-strategy recipes, N and seeds.

    Raises:
        KeyError: unknown preset or part.

    """
    parts = get_config(name).get("parts", {})
    if part not in parts:
        raise KeyError(f"Preset {name!r} has no part {part!r}; its parts: {', '.join(parts) or 'none'}.")
    grid_keys = ("description", "strategies", "per_strategy", "samples_per_class", "seeds")
    return {key: value for key, value in parts[part].items() if key not in grid_keys}


def own_settings(preset_own: dict, overrides: dict) -> dict:
    """Strategy name -> its own fields: the preset's, less those the user gave for every strategy, then the caller's.

    Args:
        preset_own: a preset's `per_strategy` (strategy name -> fields).
        overrides: the fields given for every strategy; its `per_strategy`, if any, is taken out and applied last.

    Returns:
        Strategy name -> fields, for `expand`'s `per_strategy`.

    """
    given = overrides.pop("per_strategy", None) or {}
    own = {}
    for name in set(preset_own) | set(given):
        kept = {key: value for key, value in preset_own.get(name, {}).items() if key not in overrides}
        own[name] = {**kept, **given.get(name, {})}
    return own
