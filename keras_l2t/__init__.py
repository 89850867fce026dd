"""keras_l2t: transfer learning with Keras 3, from frozen feature extractors to L2T-ww and L2T-www.

Importing the package loads nothing heavy and changes no process-wide setting: the submodules (and TensorFlow)
load when first used, so that a script can call `keras_l2t.process.configure()` before TensorFlow starts.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "backbones", "callbacks", "data", "experiment", "grid", "inference", "nets", "paths", "presets", "process",
    "report", "results", "stats", "strategies", "weights",
)  # fmt: skip
_NAMES = {
    "BackboneSpec": "keras_l2t.backbones",
    "L2TModel": "keras_l2t.l2t",
    "RunConfig": "keras_l2t.experiment",
    "export": "keras_l2t.inference",
    "run": "keras_l2t.experiment",
    "WeightsError": "keras_l2t.weights",
    "WeightsUnavailableError": "keras_l2t.weights",
}

__all__ = [*_NAMES, *_SUBMODULES, "__version__"]


def __getattr__(name: str):
    """Load a submodule or a public name on first use (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_l2t.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'keras_l2t' has no attribute {name!r}")
