"""Our own networks as plain builder functions with explicit, stable layer names.

Written in the style of `keras.applications`: one function per network, `num_classes=None` gives the
feature extractor (no classifier), and layer names follow the reference implementations so that
pretrained weights can be mapped onto them by name (see `keras_l2t.networks.weights`).
"""

from __future__ import annotations

import keras
from keras import layers

# PyTorch defaults, which the L2T-ww reference relies on (BatchNorm eps 1e-5, momentum 0.1).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9

RESNET32_STAGES = (("block1", "blocks2"), ("block3", "blocks4"), ("block5", "blocks6"))
RESNET32_WIDTHS = (16, 32, 64)
VGG9_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
SQUEEZENET_FIRES = {
    2: (16, 64),
    3: (16, 64),
    4: (32, 128),
    5: (32, 128),
    6: (48, 192),
    7: (48, 192),
    8: (64, 256),
    9: (64, 256),
}


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name)


def _conv3x3(x, filters: int, stride: int, name: str, use_bias: bool = False, initializer="glorot_uniform"):
    """A 3x3 convolution padded by 1 on every side, as PyTorch does (also for stride 2)."""
    if stride == 1:
        return layers.Conv2D(filters, 3, padding="same", use_bias=use_bias, kernel_initializer=initializer, name=name)(
            x
        )
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters, 3, strides=stride, padding="valid", use_bias=use_bias, kernel_initializer=initializer, name=name
    )(x)


def _basic_block(x, filters: int, stride: int, name: str):
    """Torchvision's BasicBlock: conv-BN-ReLU-conv-BN, plus a (projected) shortcut, then ReLU."""
    shortcut = x
    y = _conv3x3(x, filters, stride, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(_batch_norm(f"{name}_bn1")(y))
    y = _batch_norm(f"{name}_bn2")(_conv3x3(y, filters, 1, f"{name}_conv2"))
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_downsample_0")(x)
        shortcut = _batch_norm(f"{name}_downsample_1")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet32_block_names() -> list[str]:
    """Names of the 15 residual blocks of `resnet32`, in order (state-dict style: `blocks2_0` = `blocks2.0`).

    Returns:
        The block name prefixes; each block's output layer is `<name>_out`.

    """
    names = []
    for first, rest in RESNET32_STAGES:
        names += [first] + [f"{rest}_{index}" for index in range(4)]
    return names


def resnet32(input_shape=(32, 32, 3), num_classes: int | None = None, name: str = "resnet32") -> keras.Model:
    """CIFAR-style ResNet-32, the source network of L2T-ww (He et al. 2016; Jang et al. 2019).

    Conv 3x3 (with bias) + BN + ReLU, three stages of five BasicBlocks (16, 32, 64 channels, stride 2 with
    a 1x1 projection shortcut at the start of stages 2 and 3), global average pooling, `fc`.

    Args:
        input_shape: (height, width, 3); any size of 8 pixels or more.
        num_classes: logits size of the `fc` classifier (after global average pooling); None for no head.
        name: the model's name.

    Returns:
        A `keras.Model` returning logits (with `num_classes`) or the last block's 64-channel map.

    """
    inputs = keras.Input(input_shape, name="image")
    x = _conv3x3(inputs, 16, 1, "conv1", use_bias=True)
    x = layers.ReLU(name="relu1")(_batch_norm("bn1")(x))
    blocks = iter(resnet32_block_names())
    for stage, filters in enumerate(RESNET32_WIDTHS):
        for index in range(5):
            stride = 2 if stage > 0 and index == 0 else 1
            x = _basic_block(x, filters, stride, next(blocks))
    if num_classes is not None:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, x, name=name)


# resnet32's feature taps are its 15 block outputs; fine-tuning blocks are the stem and each residual block.
RESNET32_TAPS = tuple(f"{block}_out" for block in resnet32_block_names())
RESNET32_BLOCKS = ("relu1",) + RESNET32_TAPS


def vgg9(input_shape=(32, 32, 3), num_classes: int | None = None, name: str = "vgg9") -> keras.Model:
    """VGG-9 with BatchNorm, the target network of L2T-ww (Jang et al. 2019, `models/vgg.py` of the reference).

    Convolutions [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M], each 3x3 'same' with bias + BN
    (eps 1e-5) + ReLU; M = 2x2 max-pool; then one Dense to the classes. Initialised as the reference:
    He-normal (fan_out) convolutions with zero bias, BN gamma 1 / beta 0, classifier normal(0, 0.01).

    Args:
        input_shape: (height, width, 3), at least 32x32.
        num_classes: logits size of the `classifier`; None to end at the last max-pool.
        name: the model's name.

    Returns:
        A `keras.Model`; its taps are `relu1`, `relu2`, `relu4`, `relu6`, `relu8` (before each max-pool).

    """
    inputs = keras.Input(input_shape, name="image")
    x, conv_index, pool_index = inputs, 0, 0
    for item in VGG9_LAYOUT:
        if item == "M":
            pool_index += 1
            x = layers.MaxPooling2D(2, name=f"pool{pool_index}")(x)
            continue
        conv_index += 1
        # a new initializer per layer: Keras 3 draws the same values from one instance for the same shape
        he_fan_out = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
        x = layers.Conv2D(item, 3, padding="same", kernel_initializer=he_fan_out, name=f"conv{conv_index}")(x)
        x = layers.ReLU(name=f"relu{conv_index}")(_batch_norm(f"bn{conv_index}")(x))
    if num_classes is not None:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        classifier_init = keras.initializers.RandomNormal(stddev=0.01)
        x = layers.Dense(num_classes, kernel_initializer=classifier_init, name="classifier")(x)
    return keras.Model(inputs, x, name=name)


# vgg9's taps: the ReLU before each max-pool (L2T-ww's target features); a block ends at each pool.
VGG9_TAPS = ("relu1", "relu2", "relu4", "relu6", "relu8")
VGG9_BLOCKS = ("pool1", "pool2", "pool3", "pool4", "pool5")


def _fire(x, index: int):
    squeeze, expand = SQUEEZENET_FIRES[index]
    prefix = f"fire{index}"
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"{prefix}_squeeze1x1")(x)
    left = layers.Conv2D(expand, 1, activation="relu", name=f"{prefix}_expand1x1")(x)
    right = layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{prefix}_expand3x3")(x)
    return layers.Concatenate(name=f"{prefix}_concat")([left, right])


def squeezenet1_1(
    input_shape=(224, 224, 3), num_classes: int | None = None, name: str = "squeezenet1_1"
) -> keras.Model:
    """SqueezeNet v1.1 (Iandola et al. 2016), layer for layer as rcmalli/keras-squeezenet.

    Conv 3x3/2 (64, valid, ReLU), max-pool 3/2, fire2-3, max-pool 3/2, fire4-5, max-pool 3/2, fire6-9;
    each fire = squeeze 1x1 ReLU, then concat[expand 1x1 ReLU, expand 3x3 ReLU]. Layer `fireN_squeeze1x1`
    here is `fireN/squeeze1x1` in the rcmalli weights file.

    Args:
        input_shape: (height, width, 3), at least 32x32.
        num_classes: with a number, adds dropout 0.5, global average pooling and a Dense `classifier`.
        name: the model's name.

    Returns:
        A `keras.Model` ending at `fire9_concat` (no classifier) or at the logits.

    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(64, 3, strides=2, padding="valid", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for index in range(2, 10):
        x = _fire(x, index)
        if index in (3, 5):
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{index}")(x)
    if num_classes is not None:
        x = layers.Dropout(0.5, name="dropout")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, x, name=name)


# squeezenet1_1's taps: the stem and the fire module before each pool, and the last one; blocks: stem, fires.
SQUEEZENET_TAPS = ("conv1", "fire3_concat", "fire5_concat", "fire9_concat")
SQUEEZENET_BLOCKS = ("pool1",) + tuple(f"fire{index}_concat" for index in SQUEEZENET_FIRES)


def lenet5(input_shape=(32, 32, 3), num_classes: int | None = None, name: str = "lenet5") -> keras.Model:
    """LeNet-5 (LeCun et al. 1998) for 32x32 inputs, with ReLU and max-pooling: the from-scratch baseline.

    Args:
        input_shape: (32, 32, channels); the flattened size fixes the input size.
        num_classes: logits size of the `classifier`; None to end at the 84-unit `fc2` features.
        name: the model's name.

    Returns:
        A `keras.Model`; taps are `relu1` (6@28x28) and `relu2` (16@10x10).

    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.ReLU(name="relu1")(layers.Conv2D(6, 5, name="conv1")(inputs))
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.ReLU(name="relu2")(layers.Conv2D(16, 5, name="conv2")(x))
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="fc1")(x)
    x = layers.Dense(84, activation="relu", name="fc2")(x)
    if num_classes is not None:
        x = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, x, name=name)


# lenet5's taps: the two convolutions' ReLUs; blocks: each convolution with its pool, then the dense layers.
LENET5_TAPS = ("relu1", "relu2")
LENET5_BLOCKS = ("pool1", "pool2", "fc2")
