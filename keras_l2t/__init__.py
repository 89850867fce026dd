"""keras_l2t: transfer learning with Keras 3, from frozen feature extractors to L2T-ww and L2T-www."""

from keras_l2t import backbones, data, experiment, grid, nets, stats, strategies, weights
from keras_l2t.backbones import BackboneSpec
from keras_l2t.experiment import RunConfig, run
from keras_l2t.l2t import L2TModel
from keras_l2t.weights import WeightsError, WeightsUnavailableError

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "L2TModel",
    "RunConfig",
    "WeightsError",
    "WeightsUnavailableError",
    "backbones",
    "data",
    "experiment",
    "grid",
    "nets",
    "run",
    "stats",
    "strategies",
    "weights",
    "__version__",
]
