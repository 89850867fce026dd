import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.networks import backbones
from keras_l2t.training import freezing, regularizers, strategies


def test_starting_point_penalty_is_alpha_half_distance_plus_beta_half_head_norm():
    rng = np.random.default_rng(0)
    first, head = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    start = first + rng.normal(size=first.shape)
    penalty = regularizers.starting_point_penalty(
        [tf.Variable(first, dtype="float32")], [tf.constant(start, "float32")],
        [tf.Variable(head, dtype="float32")], alpha=0.3, beta=0.02,
    )  # fmt: skip
    by_hand = 0.3 / 2 * np.sum((first - start) ** 2) + 0.02 / 2 * np.sum(head**2)
    np.testing.assert_allclose(float(penalty), by_hand, rtol=1e-5)


def test_feature_map_penalty_weighs_each_channel_by_its_attention():
    rng = np.random.default_rng(1)
    maps, reference = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4))
    attention = np.array([0.1, 0.2, 0.3, 0.4])
    penalty = regularizers.feature_map_penalty(
        tf.constant(maps, "float32"), tf.constant(reference, "float32"), tf.constant(attention, "float32"), alpha=0.5
    )
    # per image: sum over channels of 4 * a_c * (mean over the 9 positions of the squared difference)
    per_image = [sum(4 * attention[c] * np.mean((maps[i, :, :, c] - reference[i, :, :, c]) ** 2) for c in range(4))
                 for i in range(2)]  # fmt: skip
    np.testing.assert_allclose(float(penalty), 0.5 / 2 * np.mean(per_image), rtol=1e-5)


@pytest.mark.parametrize("shape", [(6, 10), (10, 4)], ids=["dims above batch", "dims below batch"])
def test_spectral_shrinkage_is_the_smallest_squared_singular_values(shape):
    features = np.random.default_rng(2).normal(size=shape)
    singular = np.linalg.svd(features, compute_uv=False)  # descending, min(shape) of them
    for smallest in (1, 2):
        penalty = regularizers.spectral_shrinkage(tf.constant(features, "float32"), eta=0.01, smallest=smallest)
        np.testing.assert_allclose(float(penalty), 0.01 * np.sum(np.sort(singular)[:smallest] ** 2), rtol=1e-4)


def test_channel_attention_is_the_softmax_of_the_loss_rise_without_each_channel():
    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    weights, bias = rng.normal(size=(5, 3)), rng.normal(size=3)

    def loss(values):
        logits = values @ weights + bias
        return np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(20), labels])

    rises = []
    for channel in range(5):
        without = features.copy()
        without[:, channel] = 0
        rises.append(loss(without) - loss(features))
    expected = np.exp(rises) / np.sum(np.exp(rises))
    np.testing.assert_allclose(regularizers.channel_attention(features, labels, weights, bias), expected, rtol=1e-5)


def _classifier(penalties):
    network = strategies.build(
        "full_fine_tune", backbone="lenet5", num_classes=3, weights=None, input_shape=(32, 32, 3), dropout=0.0
    )
    backbone = next(layer for layer in network.layers if isinstance(layer, keras.Model))
    model = regularizers.RegularizedClassifier(
        network, backbone, penalties, ["head_classifier"], "head_dropout", "head_pool"
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def test_one_step_follows_the_gradient_of_cross_entropy_plus_the_penalties():
    keras.utils.set_random_seed(0)
    penalties = regularizers.Penalties(starting_point=0.5, head=0.1, feature_maps=0.05, spectral=0.01)
    model = _classifier(penalties)
    images = np.random.default_rng(4).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 3
    # move off the starting point, so that L2-SP's pull is not zero
    for variable, start in zip(model.backbone_variables, model.starting_values, strict=True):
        variable.assign(start + 0.01)
    model.prepare([(images, labels)])  # DELTA's attention, before the hand gradient (fit would prepare it first)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        maps, pooled, logits = model.outputs_of(images, training=True)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        total = cross_entropy + model.penalty(images, maps, pooled)
    gradients = tape.gradient(total, variables)
    expected = [np.asarray(v) - 0.01 * np.asarray(g) for v, g in zip(variables, gradients, strict=True)]
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for variable, value in zip(variables, expected, strict=True):
        np.testing.assert_allclose(np.asarray(variable), value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field", ["starting_point", "head", "feature_maps", "spectral"])
def test_each_penalty_changes_the_step(field):
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(5).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 3
    changes = []
    for strength in (0.0, 0.5):
        keras.utils.set_random_seed(0)
        model = _classifier(regularizers.Penalties(**{field: strength}))
        for variable, start in zip(model.backbone_variables, model.starting_values, strict=True):
            variable.assign(start + 0.01)
        before = [np.asarray(v) for v in model.trainable_variables]
        history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        changes.append([np.asarray(v) - b for v, b in zip(model.trainable_variables, before, strict=True)])
        assert (history.history["penalty"][0] > 0) == (strength > 0)
    assert max(np.max(np.abs(a - b)) for a, b in zip(*changes, strict=True)) > 1e-6


def test_fit_prepares_delta_attention_from_the_pretrained_features():
    from keras_l2t.training import probe

    keras.utils.set_random_seed(0)
    model = _classifier(regularizers.Penalties(feature_maps=0.1))
    images = np.random.default_rng(6).uniform(0, 255, (12, 32, 32, 3)).astype("float32")
    labels = np.arange(12) % 3
    features = np.asarray(model.reference(images, training=False))  # lenet5: flat features, the maps themselves
    expected = regularizers.channel_attention(features, labels, *probe.fit_linear_classifier(features, labels))
    model.fit(images, labels, batch_size=12, epochs=1, verbose=0)
    np.testing.assert_allclose(np.asarray(model.attention), expected, rtol=1e-4)
    assert not np.allclose(expected, 1 / len(expected)), "the case must not be uniform attention already"


@pytest.mark.parametrize("name", [name for name in strategies.names() if strategies.spec(name).penalties])
def test_a_regularised_run_keeps_the_plain_network(name, tmp_path):
    from keras_l2t.datasets import data
    from keras_l2t.running import experiment, inference
    from keras_l2t.running.config import RunConfig

    rng = np.random.default_rng(7)
    images, labels = rng.integers(0, 256, (36, 32, 32, 3), dtype="uint8"), np.arange(36) % 3
    splits = data.load((images, labels), backbone="lenet5", validation=0.2, test_fraction=0.2, batch_size=8)
    config = RunConfig(name, dataset="tiny", backbone="lenet5", weights=None, epochs=2, out=str(tmp_path))
    result = experiment.run(config, splits)
    assert result["epochs_run"] == 2 and 0 <= result["test_accuracy"] <= 1
    model, metadata = inference.load_model(config.paths.model)
    assert not isinstance(model, regularizers.RegularizedClassifier) and metadata["strategy"] == name
    assert model.predict(images[:2], verbose=0).shape == (2, 3)


def test_a_loss_scaling_optimizer_takes_the_same_step():
    images = np.random.default_rng(8).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 3
    steps = []
    for scaling in (False, True):
        keras.utils.set_random_seed(0)  # the same initial weights for both
        model = _classifier(regularizers.Penalties(starting_point=0.5, head=0.1, spectral=0.01))
        optimizer = keras.optimizers.SGD(0.01)
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if scaling else optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = [np.asarray(v) for v in model.trainable_variables]
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        steps.append([np.asarray(v) - b for v, b in zip(model.trainable_variables, before, strict=True)])
    for plain, scaled in zip(*steps, strict=True):
        np.testing.assert_allclose(scaled, plain, rtol=1e-3, atol=1e-7)


def test_unfreezing_the_last_block_of_a_regularised_model_reaches_its_backbone():
    network = strategies.build("l2_sp", backbone="vgg9", num_classes=3, weights=None, input_shape=(32, 32, 3))
    freezing.unfreeze(network, last_blocks=1, learning_rate=1e-5)
    backbone = network.network.get_layer("vgg9")
    last = set(backbones.blocks(backbone)[-1])
    trains = {layer.name for layer in backbone.layers if layer.trainable_weights}
    assert trains and trains <= last, "only the backbone's last block (and no BatchNorm) trains"
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
