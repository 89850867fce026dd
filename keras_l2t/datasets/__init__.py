"""keras_l2t.datasets: image folders, TFDS and arrays, splits, augmentation, the image cache.

Modules: `data`, `sources`, `image_files`, `splits`, `augment`, `folder_cache`.
"""
