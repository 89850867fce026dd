"""The course's traffic-sign recipe: grayscale and equalised input, rotation and blur, LeNet from scratch."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_image_folder

from keras_l2t.datasets import augment
from keras_l2t.running import experiment, inference, presets
from keras_l2t.running.config import RunConfig


def recipe(dataset: str, **changes) -> RunConfig:
    fields = {
        key: value
        for key, value in presets.get_config("traffic_signs").items()
        if key not in ("strategies", "samples_per_class", "seeds")
    }
    return RunConfig("scratch", dataset=dataset, **{**fields, **changes})


def test_the_preset_is_the_course_recipe():
    config = recipe("x")
    assert (config.backbone, config.weights, config.image_size, config.batch_size) == ("lenet5", None, 32, 128)
    assert (config.grayscale, config.equalize, config.dropout, config.epochs) == (True, True, 0.3, 20)
    assert augment.augment_transforms(config.augment, 32) == ("rotation", "blur")  # never a mirror


def test_a_run_feeds_lenet_one_equalised_channel_and_keeps_rgb_input(tmp_path):
    folder = tiny_image_folder(tmp_path / "signs")
    config = recipe(folder, epochs=1, batch_size=8, validation=3, out=str(tmp_path / "runs"), verbose=0)
    splits = experiment.load_data(config)
    model = experiment.build_model(config, splits)
    lenet = model.get_layer("lenet5")
    assert lenet.input_shape[-1] == 1 and model.input_shape[-1] == 3  # the saved model takes RGB images
    assert model.get_layer("equalization") is not None
    assert model.get_layer("head_dropout").rate == pytest.approx(0.3)
    result = experiment.run(config)
    assert 0 <= result["test_accuracy"] <= 1
    image = next(iter(sorted((tmp_path / "signs" / "test" / "bee").iterdir())))
    (prediction,) = inference.predict(config.paths.model, [str(image)], top_k=1)  # the kept model, from RGB files
    assert prediction["top"][0][0] in ("ant", "bee", "cow")


def test_equalization_stretches_a_dull_image():
    inputs = tf.constant(np.linspace(100, 110, 32 * 32 * 3).reshape(1, 32, 32, 3), "float32")
    outputs = augment.input_filters(inputs, grayscale=True, equalize=True).numpy()
    assert outputs.shape == (1, 32, 32, 1)
    assert outputs.max() - outputs.min() > 200  # 10 grey levels spread over the whole range


def test_blur_is_seeded_and_smooths():
    blur = augment.augmenter("blur", 32)
    image = tf.constant(np.tile([0, 255], 16 * 32 * 3).reshape(32, 32, 3), "uint8")  # stripes
    seed = tf.constant([1, 2], "int64")
    once, again = blur(image, seed).numpy(), blur(image, seed).numpy()
    np.testing.assert_array_equal(once, again)
    assert 0 < once.std() < image.numpy().std()
    flat = tf.fill((32, 32, 3), tf.constant(90, "uint8"))
    np.testing.assert_array_equal(blur(flat, seed).numpy(), flat.numpy())
