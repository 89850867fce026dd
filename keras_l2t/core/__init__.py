"""keras_l2t.core: process-wide settings, devices, Keras internals, run settings, paths.

Modules: `process`, `hardware`, `keras_internals`, `settings`, `paths`.
"""
