"""keras_l2t: transfer learning with Keras 3, from frozen feature extractors to L2T-ww and L2T-www."""

from keras_l2t import backbones, nets, weights
from keras_l2t.backbones import BackboneSpec
from keras_l2t.weights import WeightsError, WeightsUnavailableError

__version__ = "0.1.0"

__all__ = ["BackboneSpec", "WeightsError", "WeightsUnavailableError", "backbones", "nets", "weights", "__version__"]
