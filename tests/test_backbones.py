import h5py
import keras
import numpy as np
import pytest

from keras_l2t.networks import backbones, nets
from keras_l2t.networks.weights import WeightsError, WeightsUnavailableError

NAMES = backbones.names()
IMAGENET = [name for name in NAMES if "imagenet" in backbones.spec(name).weight_sources]


def test_registry_lists_every_requested_backbone():
    requested = {
        "resnet32",
        "vgg9",
        "squeezenet1_1",
        "lenet5",
        "mobilenet_v2",
        "vgg16",
        "xception",
        "vgg19",
        "resnet50",
        "inception_v3",
        "inception_resnet_v2",
        "mobilenet",
        "densenet121",
        "nasnet_mobile",
    }
    assert requested <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_taps_and_runs_at_minimum_size(name):
    spec = backbones.spec(name)
    size = spec.min_size
    model = backbones.build(name, input_shape=(size, size, 3))
    assert model.name == name
    features = backbones.tap_model(model)(
        np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    )
    assert len(features) == len(spec.taps) > 0
    for feature in features:
        assert feature.shape[0] == 2 and feature.ndim == 4 and np.all(np.isfinite(np.asarray(feature)))
    resolutions = [feature.shape[1] for feature in features]
    assert resolutions == sorted(resolutions, reverse=True), "taps are ordered from input to output"
    assert not repeated_kernels(model), "layers of one shape must draw their own initial weights"


def repeated_kernels(model: keras.Model) -> list[str]:
    """Names of kernels equal to an earlier kernel of the same shape (one initializer instance reused)."""
    seen, repeated = {}, []
    for variable in model.trainable_weights:
        if len(variable.shape) < 2:
            continue
        values = np.asarray(variable)
        key = (tuple(values.shape), values.tobytes())
        if key in seen and np.std(values) > 0:
            repeated.append(f"{variable.path} == {seen[key]}")
        seen.setdefault(key, variable.path)
    return repeated


@pytest.mark.parametrize("name", NAMES)
def test_blocks_partition_the_weighted_layers_in_order(name):
    spec = backbones.spec(name)
    model = backbones.build(name, input_shape=(spec.min_size, spec.min_size, 3), num_classes=7)
    groups = backbones.blocks(model)
    assert len(groups) == len(spec.blocks)
    flat = [layer for group in groups for layer in group]
    assert len(flat) == len(set(flat)), "no layer in two blocks"
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert set(weighted) <= set(flat)
    assert all(any(model.get_layer(layer).weights for layer in group) for group in groups), "every block has weights"
    assert "classifier" in groups[-1] or "fc" in groups[-1]
    order = {layer.name: index for index, layer in enumerate(model.layers)}
    ends = [order[end] for end in spec.blocks]
    assert ends == sorted(ends)


@pytest.mark.parametrize("name", NAMES)
def test_classifier_returns_logits(name):
    spec = backbones.spec(name)
    model = backbones.build(name, input_shape=(spec.min_size, spec.min_size, 3), num_classes=5)
    logits = model(np.zeros((3, spec.min_size, spec.min_size, 3), "float32"))
    assert logits.shape == (3, 5)


@pytest.mark.parametrize("name", NAMES)
def test_too_small_input_says_the_minimum(name):
    spec = backbones.spec(name)
    small = spec.min_size - 1
    with pytest.raises(ValueError, match=f"at least {spec.min_size}x{spec.min_size}"):
        backbones.build(name, input_shape=(small, small, 3))


def test_wrong_channel_count_is_explained():
    with pytest.raises(ValueError, match=r"\(height, width, 3\) for RGB images or \(height, width, 1\)"):
        backbones.build("vgg9", input_shape=(32, 32, 2))
    assert backbones.build("lenet5", input_shape=(32, 32, 1)).input_shape == (None, 32, 32, 1)  # grayscale


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="Did you mean 'mobilenet_v2'"):
        backbones.spec("mobilenetv2")
    with pytest.raises(KeyError, match="Registered backbones: resnet32"):
        backbones.build("alexnet")


def test_missing_weights_file_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a named pretraining"):
        backbones.build("resnet32", weights=str(tmp_path / "nothing.npz"))


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_offline_says_how_to_pass_a_local_file(name, fake_download):
    spec = backbones.spec(name)
    with pytest.raises(WeightsUnavailableError, match="weights='/path/to/"):
        backbones.build(name, weights="imagenet", input_shape=spec.default_input_shape)


def test_resnet32_named_weights_download_and_convert_the_published_checkpoint(shared, fake_download):
    source = backbones.spec("resnet32").weight_sources["tinyimagenet"]
    fake_download[source.url] = shared / "weights" / source.file_name
    downloaded = backbones.build("resnet32", weights="tinyimagenet", num_classes=200)
    local = backbones.build(
        "resnet32", weights=str(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz"), num_classes=200
    )
    for a, b in zip(downloaded.weights, local.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_squeezenet_named_weights_download_with_checksum(shared, fake_download):
    source = backbones.spec("squeezenet1_1").weight_sources["imagenet"]
    fake_download[source.url] = shared / "weights/squeezenet_v1.1_imagenet_notop.h5"
    model = backbones.build("squeezenet1_1", weights="imagenet", input_shape=(64, 64, 3))
    assert_holds_the_rcmalli_file(model, fake_download[source.url])


def rcmalli_arrays(path) -> dict:
    """The per-layer arrays of the rcmalli file, read here with h5py alone (not with the library's reader)."""
    text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        layers = {text(name): root[text(name)] for name in root.attrs["layer_names"]}
        return {
            name.replace("/", "_"): [np.asarray(group[text(weight)]) for weight in group.attrs["weight_names"]]
            for name, group in layers.items()
            if len(group.attrs.get("weight_names", []))
        }


def assert_holds_the_rcmalli_file(model, path):
    stored = rcmalli_arrays(path)
    weighted = {layer.name: layer for layer in model.layers if layer.weights}
    assert set(weighted) == set(stored) and len(stored) == 25  # conv1 and 8 fire modules of 3 convolutions
    for name, arrays in stored.items():
        for weight, array in zip(weighted[name].weights, arrays, strict=True):
            np.testing.assert_array_equal(np.asarray(weight), array, err_msg=name)


# Acceptance: the published L2T-ww source network, reproduced logit for logit (issue 2).
RESNET32_REFERENCE = {
    "airplane": (64, 10.1005),
    "automobile": (116, 8.4258),
    "bird": (55, 6.6418),
    "cat": (30, 7.1753),
    "deer": (152, 7.5134),
    "dog": (31, 12.1064),
    "frog": (39, 11.0872),
    "horse": (129, 5.9907),
    "ship": (94, 13.7721),
    "truck": (166, 11.3132),
}


def test_resnet32_reproduces_the_published_network(shared):
    from keras_l2t.datasets import sources

    model = backbones.build(
        "resnet32", weights=str(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz"), num_classes=200
    )
    classes = list(RESNET32_REFERENCE)
    images = sources.read_images([str(shared / f"data/cifar10/test/{name}/0000.jpg") for name in classes])
    logits = np.asarray(model(backbones.spec("resnet32").preprocess(images), training=False))
    for name, row in zip(classes, logits, strict=True):
        label, maximum = RESNET32_REFERENCE[name]
        assert int(row.argmax()) == label, name
        assert abs(float(row.max()) - maximum) < 0.05, name


def test_squeezenet_weights_load_every_layer(shared):
    path = shared / "weights/squeezenet_v1.1_imagenet_notop.h5"
    model = backbones.build("squeezenet1_1", weights=str(path))
    assert model.count_params() == 722_496
    assert_holds_the_rcmalli_file(model, path)


def test_mobilenet_v2_local_weights_load(shared):
    path = shared / "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"
    model = backbones.build("mobilenet_v2", weights=str(path), input_shape=(96, 96, 3))
    random = backbones.build("mobilenet_v2", input_shape=(96, 96, 3))
    assert not np.allclose(
        np.asarray(model.get_layer("Conv1").weights[0]), np.asarray(random.get_layer("Conv1").weights[0])
    )


def test_weights_of_another_architecture_name_the_layer(shared, tmp_path):
    with pytest.raises(WeightsError, match="layer 'conv1'"):
        backbones.build("vgg9", weights=str(shared / "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"))
    state = dict(np.load(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz"))
    state["block3.conv1.weight"] = state["block3.conv1.weight"][:, :8]
    np.savez(tmp_path / "broken.npz", **state)
    with pytest.raises(WeightsError, match="layer 'block3_conv1' expects"):
        backbones.build("resnet32", weights=str(tmp_path / "broken.npz"))
    with pytest.raises(WeightsError, match="not an HDF5 weights file"):
        backbones.build("squeezenet1_1", weights=str(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz"))
    with pytest.raises(WeightsError, match="layer 'conv1' expects"):
        backbones.build("resnet32", weights=str(shared / "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"))
    with pytest.raises(WeightsError, match="neither an .npz"):
        backbones.build("resnet32", weights=str(shared / "weights/squeezenet_v1.1_imagenet_notop.h5"))


def test_resnet32_classifier_for_other_classes_keeps_backbone_weights(shared):
    path = str(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz")
    model = backbones.build("resnet32", weights=path, num_classes=10)
    state = np.load(path)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("conv1").weights[0]), state["conv1.weight"].transpose(2, 3, 1, 0)
    )
    assert model.output.shape[-1] == 10


def test_vgg9_initialisation_follows_the_reference():
    model = nets.vgg9(num_classes=10)
    kernel = np.asarray(model.get_layer("conv5").weights[0])  # 3x3, 256 -> 512: fan_out = 9 * 512
    assert abs(kernel.std() - np.sqrt(2 / (9 * 512))) < 0.05 * np.sqrt(2 / (9 * 512))
    assert np.all(np.asarray(model.get_layer("conv5").weights[1]) == 0)
    classifier = np.asarray(model.get_layer("classifier").weights[0])
    assert abs(classifier.std() - 0.01) < 0.001


def test_tap_model_can_include_the_output():
    model = backbones.build("vgg9", num_classes=10)
    outputs = backbones.tap_model(model, ["relu2"], include_output=True)(np.zeros((1, 32, 32, 3), "float32"))
    assert [tuple(output.shape) for output in outputs] == [(1, 16, 16, 128), (1, 10)]
    with pytest.raises(ValueError, match="no layers named"):
        backbones.tap_model(model, ["relu99"])


def test_weights_mirror_finds_named_weights_by_checksum_offline(shared, fake_download, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "renamed.h5").symlink_to(shared / "weights/squeezenet_v1.1_imagenet_notop.h5")
    monkeypatch.setenv("KERAS_L2T_WEIGHTS_DIR", str(mirror))
    model = backbones.build("squeezenet1_1", weights="imagenet", input_shape=(64, 64, 3))  # no network: mirror
    expected = backbones.build("squeezenet1_1", weights=str(mirror / "renamed.h5"), input_shape=(64, 64, 3))
    for mine, theirs in zip(model.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    source = backbones.spec("squeezenet1_1").weight_sources["imagenet"]
    (mirror / source.file_name).write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="SHA-256"):
        backbones.build("squeezenet1_1", weights="imagenet", input_shape=(64, 64, 3))


def test_keras_application_imagenet_weights_come_from_the_mirror_by_input_size(fake_download, tmp_path, monkeypatch):
    from keras.src.legacy.saving import legacy_h5_format  # writes the Keras Applications file format

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    saved = backbones.build("mobilenet_v2", input_shape=(96, 96, 3))  # random weights, saved as the 96 px file
    with h5py.File(mirror / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, saved)
    monkeypatch.setenv("KERAS_L2T_WEIGHTS_DIR", str(mirror))
    model = backbones.build("mobilenet_v2", weights="imagenet", input_shape=(96, 96, 3))  # no network: mirror
    for a, b in zip(model.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(WeightsUnavailableError, match="kernels_1.0_128_no_top.h5"):  # the file of its own size
        backbones.build("mobilenet_v2", weights="imagenet", input_shape=(128, 128, 3))
    with pytest.raises(WeightsUnavailableError, match="kernels_1.0_224_no_top.h5"):  # as keras.applications picks
        backbones.build("mobilenet_v2", weights="imagenet", input_shape=(100, 100, 3))


def test_every_private_keras_hook_is_still_there():
    from keras_l2t.core import keras_internals

    keras_internals.check()  # fails loudly, naming the hook, when a Keras release renames one
    layer = keras.layers.BatchNormalization()
    assert keras_internals.weights_file_name(layer) == "batch_normalization"
    del layer._reduction_axes  # as if a Keras release had renamed it
    with pytest.raises(keras_internals.KerasInternalsChanged, match=r"no BatchNormalization._reduction_axes.*tested"):
        keras_internals.batch_norm_axes(layer)


def test_a_renamed_backbone_keeps_its_taps_and_blocks():
    model = backbones.build("vgg9", input_shape=(32, 32, 3), num_classes=3)
    expected_blocks = backbones.blocks(model)
    model.name = "my_renamed_network"
    features = backbones.tap_model(model)(np.zeros((1, 32, 32, 3), "float32"))
    assert len(features) == len(backbones.spec("vgg9").taps)
    assert backbones.blocks(model) == expected_blocks
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv")], name="mine")
    with pytest.raises(ValueError, match="pass its taps"):
        backbones.tap_model(plain)
