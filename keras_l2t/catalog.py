"""The built-in backbones: their specs (sizes, preprocessing, taps, blocks, weights) and builders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import keras
import numpy as np
from keras.applications import imagenet_utils

from keras_l2t import nets
from keras_l2t import weights as weights_lib
from keras_l2t.weights import WeightSource

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"


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
    keras_application: bool = False

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
        _load_keras_weights(model, weights)
    elif weights is not None:
        weights_lib.load_state_dict(model, weights_lib.read_state_dict(weights), source=str(weights))
    return model


def _load_keras_weights(model: keras.Model, path: str) -> None:
    weights_lib.check_keras_weights_file(model, path)
    model.load_weights(path)


def _squeezenet_builder(weights, input_shape, num_classes):
    model = nets.squeezenet1_1(input_shape, num_classes)
    if weights is not None and str(weights).endswith(".weights.h5"):
        _load_keras_weights(model, weights)
    elif weights is not None:
        weights_lib.load_layer_arrays(model, weights_lib.read_rcmalli_h5(weights), source=str(weights))
    return model


def _own_builder(function):
    def builder(weights, input_shape, num_classes):
        model = function(input_shape, num_classes)
        if weights is not None:
            _load_keras_weights(model, weights)
        return model

    return builder


def _keras_application(function, name: str):
    def builder(weights, input_shape, num_classes):
        local_file = weights is not None and weights != "imagenet" and str(weights).endswith(".weights.h5")
        model = function(include_top=False, weights=None if local_file else weights, input_shape=input_shape, name=name)
        if local_file:
            _load_keras_weights(model, weights)
        if num_classes is None:
            return model
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(model.output)
        outputs = keras.layers.Dense(num_classes, name="classifier")(x)
        return keras.Model(model.input, outputs, name=model.name)

    return builder


def _keras_imagenet(file_name: str) -> dict[str, WeightSource]:
    return {
        "imagenet": WeightSource(f"{KERAS_WEIGHTS_URL}/{file_name}", file_name, None, "ImageNet-1k, Keras Applications")
    }


def own_networks() -> list[BackboneSpec]:
    """The networks of `keras_l2t.nets`.

    Returns:
        Their specs.

    """
    specs = []
    resnet_blocks = tuple(f"{block}_out" for block in nets.resnet32_block_names())
    specs.append(
        BackboneSpec(
            "resnet32",
            _resnet32_builder,
            32,
            8,
            _imagenet_normalise,
            resnet_blocks,
            ("relu1",) + resnet_blocks,
            {
                "tinyimagenet": WeightSource(
                    "https://github.com/alinlab/L2T-ww/raw/master/logs/tinyimagenet-200-resnet32/0/model_best.pth.tar",
                    "resnet32_tinyimagenet_l2tww.pth.tar",
                    "049f81f8bea8504e90818d6c614f15c485ac2d891348330b433110e161f66d68",
                    "Tiny ImageNet (200 classes, 32x32), the L2T-ww authors' source network (MIT)",
                )
            },
            "CIFAR-style ResNet-32 (He et al. 2016), the L2T-ww source network",
        )
    )
    specs.append(
        BackboneSpec(
            "vgg9",
            _own_builder(nets.vgg9),
            32,
            32,
            _imagenet_normalise,
            ("relu1", "relu2", "relu4", "relu6", "relu8"),
            ("pool1", "pool2", "pool3", "pool4", "pool5"),
            {},
            "VGG-9 with BatchNorm, the L2T-ww target network",
        )
    )
    specs.append(
        BackboneSpec(
            "squeezenet1_1",
            _squeezenet_builder,
            224,
            32,
            _caffe,
            ("conv1", "fire3_concat", "fire5_concat", "fire9_concat"),
            ("pool1",) + tuple(f"fire{index}_concat" for index in range(2, 10)),
            {
                "imagenet": WeightSource(
                    "https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/"
                    "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da",
                    "ImageNet-1k, rcmalli/keras-squeezenet (MIT)",
                )
            },
            "SqueezeNet v1.1 (Iandola et al. 2016)",
        )
    )
    specs.append(
        BackboneSpec(
            "lenet5",
            _own_builder(nets.lenet5),
            32,
            32,
            _scale_unit,
            ("relu1", "relu2"),
            ("pool1", "pool2", "fc2"),
            {},
            "LeNet-5 (LeCun et al. 1998), the from-scratch baseline",
        )
    )
    return specs


# name, constructor, module (for preprocess_input), default size, min size, taps, block ends, weights file
_KERAS_APPLICATIONS = (
    (
        "xception",
        "Xception",
        "xception",
        299,
        71,
        (
            "block1_conv2_act",
            "block3_sepconv1_act",
            "block4_sepconv1_act",
            "block13_sepconv1_act",
            "block14_sepconv2_act",
        ),
        ("block1_conv2_act",) + tuple(f"block{index}_sepconv1_act" for index in range(3, 14)),
        "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "vgg16",
        "VGG16",
        "vgg16",
        224,
        32,
        ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
        tuple(f"block{index}_pool" for index in range(1, 6)),
        "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "vgg19",
        "VGG19",
        "vgg19",
        224,
        32,
        ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4"),
        tuple(f"block{index}_pool" for index in range(1, 6)),
        "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "resnet50",
        "ResNet50",
        "resnet",
        224,
        32,
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        ("pool1_pool",)
        + tuple(
            f"conv{stage}_block{index}_out"
            for stage, count in ((2, 3), (3, 4), (4, 6), (5, 3))
            for index in range(1, count + 1)
        ),
        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "inception_v3",
        "InceptionV3",
        "inception_v3",
        299,
        75,
        ("mixed2", "mixed7", "mixed10"),
        tuple(f"mixed{index}" for index in range(11)),
        "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "inception_resnet_v2",
        "InceptionResNetV2",
        "inception_resnet_v2",
        299,
        75,
        ("block35_10_ac", "block17_20_ac", "conv_7b_ac"),
        ("mixed_5b",)
        + tuple(f"block35_{i}_ac" for i in range(1, 11))
        + ("mixed_6a",)
        + tuple(f"block17_{i}_ac" for i in range(1, 21))
        + ("mixed_7a",)
        + tuple(f"block8_{i}_ac" for i in range(1, 10))
        + ("conv_7b_ac",),
        "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "mobilenet",
        "MobileNet",
        "mobilenet",
        224,
        32,
        ("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
        ("conv1_relu",) + tuple(f"conv_pw_{index}_relu" for index in range(1, 14)),
        "mobilenet/mobilenet_1_0_224_tf_no_top.h5",
    ),
    (
        "mobilenet_v2",
        "MobileNetV2",
        "mobilenet_v2",
        224,
        32,
        ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"),
        ("expanded_conv_project_BN",) + tuple(f"block_{index}_project_BN" for index in range(1, 17)) + ("out_relu",),
        "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    (
        "densenet121",
        "DenseNet121",
        "densenet",
        224,
        32,
        ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu"),
        ("pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"),
        "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    (
        "nasnet_mobile",
        "NASNetMobile",
        "nasnet",
        224,
        32,
        ("reduction_concat_stem_1", "normal_concat_3", "normal_concat_8", "normal_concat_12"),
        ("reduction_concat_stem_1", "reduction_concat_stem_2")
        + tuple(f"normal_concat_{index}" for index in range(4))
        + ("reduction_concat_reduce_4",)
        + tuple(f"normal_concat_{index}" for index in range(5, 9))
        + ("reduction_concat_reduce_8",)
        + tuple(f"normal_concat_{index}" for index in range(9, 13)),
        "nasnet/NASNet-mobile-no-top.h5",
    ),
)


def keras_applications() -> list[BackboneSpec]:
    """The `keras.applications` models our course material lists.

    Returns:
        Their specs.

    """
    specs = []
    for name, constructor, module, default, minimum, taps, ends, weight_file in _KERAS_APPLICATIONS:
        function = getattr(keras.applications, constructor)
        preprocess = getattr(keras.applications, module).preprocess_input
        source = WeightSource(
            f"{KERAS_WEIGHTS_URL}/{weight_file}", weight_file.split("/")[-1], None, "ImageNet-1k, Keras Applications"
        )
        specs.append(
            BackboneSpec(
                name,
                _keras_application(function, name),
                default,
                minimum,
                preprocess,
                taps,
                ends,
                {"imagenet": source},
                f"keras.applications.{constructor}",
                keras_application=True,
            )
        )
    return specs
