"""Process-wide settings, made by the apps' and benchmarks' `main()` (never on import of the library).

TensorFlow turns its oneDNN CPU kernels on by default only on x86 CPUs with neural-network features such as
AVX512_VNNI, AVX512_BF16 or AMX (TensorFlow 2.9 release notes). Without them (the AMD EPYC, AVX2 only, of this
project's machine of 2026-11-30) a vgg9 training step at batch 128 took 4.99 s, with them 1.39 s
(benchmarks/step_time.py). TensorFlow reads the variable once, when it loads: so the setting belongs at the top
of a script's `main()`, before anything imports TensorFlow; a library must not change it behind its user's back.
"""

from __future__ import annotations

import os
import sys
import warnings

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def configure(onednn: bool = True) -> None:
    """Choose the process-wide settings of a keras_l2t script; call it before TensorFlow is imported.

    An explicit `TF_ENABLE_ONEDNN_OPTS` in the environment (0 to turn the kernels off) wins.

    Args:
        onednn: turn TensorFlow's oneDNN CPU kernels on (see the module's note for the measured gain).

    """
    if "tensorflow" in sys.modules and ONEDNN_VARIABLE not in os.environ:
        warnings.warn(
            "keras_l2t.core.process.configure() was called after TensorFlow was imported; the oneDNN setting has no "
            "effect in this process (call it first thing in main()).",
            stacklevel=2,
        )
    os.environ.setdefault(ONEDNN_VARIABLE, "1" if onednn else "0")
