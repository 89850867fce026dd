"""keras_l2t: transfer learning with Keras 3, from frozen feature extractors to L2T-ww and L2T-www."""

import os

# TensorFlow turns its oneDNN CPU kernels on by default only on x86 CPUs with neural-network features such as
# AVX512_VNNI, AVX512_BF16 or AMX (TensorFlow 2.9 release notes). Without them (the AMD EPYC, AVX2 only, of this
# project's machine of 2026-11-30) a vgg9 training step at batch 128 took 4.99 s, with them 1.39 s
# (benchmarks/step_time.py). TensorFlow reads the variable when it loads, so this works only when keras_l2t is
# imported before tensorflow or keras; an explicit TF_ENABLE_ONEDNN_OPTS (0 to turn them off) wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_l2t import backbones, data, experiment, grid, nets, stats, strategies, weights  # noqa: E402
from keras_l2t.backbones import BackboneSpec  # noqa: E402
from keras_l2t.experiment import RunConfig, run  # noqa: E402
from keras_l2t.l2t import L2TModel  # noqa: E402
from keras_l2t.weights import WeightsError, WeightsUnavailableError  # noqa: E402

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
