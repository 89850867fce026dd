"""The `keras.applications` backbones our course material lists, as keyword data: sizes, taps, blocks, weights.

`keras.applications` builds these networks; what it does not say (which layers to tap for feature matching, where
the blocks end for "fine-tune the last N blocks", which weights file goes with which input size) is declared
here, one entry per network. Their ImageNet files are fetched through `keras_l2t.networks.weights.download`, so the
local mirror (`$KERAS_L2T_WEIGHTS_DIR`) and the Keras cache are consulted before the network.
"""

from __future__ import annotations

import keras

from keras_l2t.networks.catalog import BackboneSpec, load_keras_weights
from keras_l2t.networks.weights import WeightSource

__all__ = ["KERAS_WEIGHTS_URL", "keras_applications"]

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"

_ENTRIES = (
    dict(
        name="xception",
        constructor="Xception",
        module="xception",
        default_size=299,
        min_size=71,
        taps=(
            "block1_conv2_act",
            "block3_sepconv1_act",
            "block4_sepconv1_act",
            "block13_sepconv1_act",
            "block14_sepconv2_act",
        ),
        blocks=("block1_conv2_act",) + tuple(f"block{index}_sepconv1_act" for index in range(3, 14)),
        weights_file="xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="vgg16",
        constructor="VGG16",
        module="vgg16",
        default_size=224,
        min_size=32,
        taps=("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
        blocks=tuple(f"block{index}_pool" for index in range(1, 6)),
        weights_file="vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="vgg19",
        constructor="VGG19",
        module="vgg19",
        default_size=224,
        min_size=32,
        taps=("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4"),
        blocks=tuple(f"block{index}_pool" for index in range(1, 6)),
        weights_file="vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="resnet50",
        constructor="ResNet50",
        module="resnet",
        default_size=224,
        min_size=32,
        taps=("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        blocks=("pool1_pool",)
        + tuple(
            f"conv{stage}_block{index}_out"
            for stage, count in ((2, 3), (3, 4), (4, 6), (5, 3))
            for index in range(1, count + 1)
        ),
        weights_file="resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="inception_v3",
        constructor="InceptionV3",
        module="inception_v3",
        default_size=299,
        min_size=75,
        taps=("mixed2", "mixed7", "mixed10"),
        blocks=tuple(f"mixed{index}" for index in range(11)),
        weights_file="inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="inception_resnet_v2",
        constructor="InceptionResNetV2",
        module="inception_resnet_v2",
        default_size=299,
        min_size=75,
        taps=("block35_10_ac", "block17_20_ac", "conv_7b_ac"),
        blocks=("mixed_5b",)
        + tuple(f"block35_{i}_ac" for i in range(1, 11))
        + ("mixed_6a",)
        + tuple(f"block17_{i}_ac" for i in range(1, 21))
        + ("mixed_7a",)
        + tuple(f"block8_{i}_ac" for i in range(1, 10))
        + ("conv_7b_ac",),
        weights_file="inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="mobilenet",
        constructor="MobileNet",
        module="mobilenet",
        default_size=224,
        min_size=32,
        taps=("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
        blocks=("conv1_relu",) + tuple(f"conv_pw_{index}_relu" for index in range(1, 14)),
        weights_file="mobilenet/mobilenet_1_0_{size}_tf_no_top.h5",
        weight_sizes=(128, 160, 192, 224),
    ),
    dict(
        name="mobilenet_v2",
        constructor="MobileNetV2",
        module="mobilenet_v2",
        default_size=224,
        min_size=32,
        taps=("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"),
        blocks=("expanded_conv_project_BN",)
        + tuple(f"block_{index}_project_BN" for index in range(1, 17))
        + ("out_relu",),
        weights_file="mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
        weight_sizes=(96, 128, 160, 192, 224),
    ),
    dict(
        name="densenet121",
        constructor="DenseNet121",
        module="densenet",
        default_size=224,
        min_size=32,
        taps=("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu"),
        blocks=("pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"),
        weights_file="densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    dict(
        name="nasnet_mobile",
        constructor="NASNetMobile",
        module="nasnet",
        default_size=224,
        min_size=32,
        taps=("reduction_concat_stem_1", "normal_concat_3", "normal_concat_8", "normal_concat_12"),
        blocks=("reduction_concat_stem_1", "reduction_concat_stem_2")
        + tuple(f"normal_concat_{index}" for index in range(4))
        + ("reduction_concat_reduce_4",)
        + tuple(f"normal_concat_{index}" for index in range(5, 9))
        + ("reduction_concat_reduce_8",)
        + tuple(f"normal_concat_{index}" for index in range(9, 13)),
        weights_file="nasnet/NASNet-mobile-no-top.h5",
    ),
)


def _builder(function, name: str):
    def builder(weights, input_shape, num_classes):
        keras_file = weights is not None and str(weights).endswith(".weights.h5")  # a Keras 3 weights file
        # Anything else that is not None is a local copy of the Keras Applications file: Keras loads it itself.
        model = function(include_top=False, weights=None if keras_file else weights, input_shape=input_shape, name=name)
        if keras_file:
            load_keras_weights(model, weights)
        if num_classes is None:
            return model
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(model.output)
        outputs = keras.layers.Dense(num_classes, name="classifier")(x)
        return keras.Model(model.input, outputs, name=model.name)

    return builder


def keras_applications() -> list[BackboneSpec]:
    """The specs of the `keras.applications` backbones (ImageNet weights from the Keras Applications store)."""
    specs = []
    for entry in _ENTRIES:
        entry = dict(entry)
        constructor, module, weights_file = entry.pop("constructor"), entry.pop("module"), entry.pop("weights_file")
        source = WeightSource(
            url=f"{KERAS_WEIGHTS_URL}/{weights_file}",
            file_name=weights_file.split("/")[-1],
            sha256=None,
            description="ImageNet-1k, Keras Applications",
        )
        specs.append(
            BackboneSpec(
                **entry,
                builder=_builder(getattr(keras.applications, constructor), entry["name"]),
                preprocess=getattr(keras.applications, module).preprocess_input,
                weight_sources={"imagenet": source},
                description=f"keras.applications.{constructor}",
            )
        )
    return specs
