"""The built-in backbones: their specs (sizes, preprocessing, taps, blocks, weights) and builders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import keras
import numpy as np
from keras.applications import imagenet_utils

from keras_l2t.networks import nets, weight_formats
from keras_l2t.networks.weights import WeightSource

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the toolkit knows about one backbone.

    Args:
        name: the registry name.
        builder: `builder(weights, input_shape, num_classes) -> keras.Model`; `weights` is None, a local path
            or (for keras.applications) "imagenet".
        default_size: the usual input height and width.
        min_size: the smallest input height and width the architecture accepts.
        preprocess: maps RGB images with values in [0, 255] to the network's input.
        taps: ordered layer names whose outputs feature matching uses.
        blocks: ordered names of the last layer of each block; a block is every layer computed after the
            previous block's end up to its own end; layers after the last end join the last block.
        weight_sources: named pretrained weights (e.g. "imagenet") and where they come from.
        description: one line on the architecture and its paper.
        weight_sizes: input sizes with their own weights file (`{size}` in the source's url and file name).

    """

    name: str
    builder: Callable[..., keras.Model]
    default_size: int
    min_size: int
    preprocess: Callable[[np.ndarray], np.ndarray]
    taps: tuple[str, ...]
    blocks: tuple[str, ...]
    weight_sources: Mapping[str, WeightSource] = dataclasses.field(default_factory=dict)
    description: str = ""
    weight_sizes: tuple[int, ...] = ()

    def weight_source(self, name: str, input_shape=None) -> WeightSource:
        """The named weights' file for an input shape (some networks have one file per input size).

        Where `weight_sizes` is set, the file is the one of the input's size when the input is square and of a
        listed size, else the one of `default_size`, as `keras.applications` chooses.

        Raises:
            KeyError: a name the backbone has no weights of.

        """
        source = self.weight_sources[name]
        if not self.weight_sizes:
            return source
        rows, columns = tuple(input_shape or self.default_input_shape)[:2]
        size = rows if rows == columns and rows in self.weight_sizes else self.default_size
        return dataclasses.replace(
            source, url=source.url.format(size=size), file_name=source.file_name.format(size=size)
        )

    @property
    def default_input_shape(self) -> tuple[int, int, int]:
        """The default (height, width, channels)."""
        return (self.default_size, self.default_size, 3)


def _imagenet_normalise(images):
    """Scale RGB [0, 255] to [0, 1], then normalise with the ImageNet mean and std (PyTorch style)."""
    return (keras.ops.convert_to_tensor(images, "float32") / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _scale_unit(images):
    """Scale RGB [0, 255] to [0, 1]."""
    return keras.ops.convert_to_tensor(images, "float32") / 255.0


def _caffe(images):
    """RGB to BGR, then subtract the ImageNet mean pixel (Caffe style)."""
    return imagenet_utils.preprocess_input(keras.ops.convert_to_tensor(images, "float32"), mode="caffe")


def _resnet32_builder(weights, input_shape, num_classes):
    model = nets.resnet32(input_shape, num_classes)
    if weights is not None and str(weights).endswith(".weights.h5"):
        load_keras_weights(model, weights)
    elif weights is not None:
        weight_formats.load_state_dict(model, weight_formats.read_state_dict(weights), source=str(weights))
    return model


def load_keras_weights(model: keras.Model, path: str) -> None:
    """Load a Keras 3 `.weights.h5` file after checking that it fits the model (see `weight_formats`)."""
    weight_formats.check_keras_weights_file(model, path)
    model.load_weights(path)


def _squeezenet_builder(weights, input_shape, num_classes):
    model = nets.squeezenet1_1(input_shape, num_classes)
    if weights is not None and str(weights).endswith(".weights.h5"):
        load_keras_weights(model, weights)
    elif weights is not None:
        weight_formats.load_layer_arrays(model, weight_formats.read_rcmalli_h5(weights), source=str(weights))
    return model


def _own_builder(function):
    def builder(weights, input_shape, num_classes):
        model = function(input_shape, num_classes)
        if weights is not None:
            load_keras_weights(model, weights)
        return model

    return builder


def own_networks() -> list[BackboneSpec]:
    """The specs of the networks of `keras_l2t.networks.nets` (their taps and blocks are declared beside their code)."""
    return [
        BackboneSpec(
            name="resnet32",
            builder=_resnet32_builder,
            default_size=32,
            min_size=8,
            preprocess=_imagenet_normalise,
            taps=nets.RESNET32_TAPS,
            blocks=nets.RESNET32_BLOCKS,
            weight_sources={
                "tinyimagenet": WeightSource(
                    url="https://github.com/alinlab/L2T-ww/raw/master/logs/tinyimagenet-200-resnet32/0/model_best.pth.tar",
                    file_name="resnet32_tinyimagenet_l2tww.pth.tar",
                    sha256="049f81f8bea8504e90818d6c614f15c485ac2d891348330b433110e161f66d68",
                    description="Tiny ImageNet (200 classes, 32x32), the L2T-ww authors' source network (MIT)",
                )
            },
            description="CIFAR-style ResNet-32 (He et al. 2016), the L2T-ww source network",
        ),
        BackboneSpec(
            name="vgg9",
            builder=_own_builder(nets.vgg9),
            default_size=32,
            min_size=32,
            preprocess=_imagenet_normalise,
            taps=nets.VGG9_TAPS,
            blocks=nets.VGG9_BLOCKS,
            description="VGG-9 with BatchNorm, the L2T-ww target network",
        ),
        BackboneSpec(
            name="squeezenet1_1",
            builder=_squeezenet_builder,
            default_size=224,
            min_size=32,
            preprocess=_caffe,
            taps=nets.SQUEEZENET_TAPS,
            blocks=nets.SQUEEZENET_BLOCKS,
            weight_sources={
                "imagenet": WeightSource(
                    url="https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/"
                    "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    file_name="squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    sha256="17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da",
                    description="ImageNet-1k, rcmalli/keras-squeezenet (MIT)",
                )
            },
            description="SqueezeNet v1.1 (Iandola et al. 2016)",
        ),
        BackboneSpec(
            name="lenet5",
            builder=_own_builder(nets.lenet5),
            default_size=32,
            min_size=32,
            preprocess=_scale_unit,
            taps=nets.LENET5_TAPS,
            blocks=nets.LENET5_BLOCKS,
            description="LeNet-5 (LeCun et al. 1998), the from-scratch baseline",
        ),
    ]
