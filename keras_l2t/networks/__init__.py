"""keras_l2t.networks: the networks and their pretrained weights.

Modules: `applications`, `backbones`, `catalog`, `nets`, `weights`, `weight_formats`, `torch_checkpoint`.
"""
