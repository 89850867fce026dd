"""The matching family's baselines (issue 34): fm_single, at, lwf and lwf_at against hand computations."""

import keras
import numpy as np
import pytest
from test_l2t import batch, tiny_model, tiny_source, tiny_target

from keras_l2t.networks import backbones
from keras_l2t.training import baselines
from keras_l2t.training.l2t import L2TModel


def softmax(x, axis=-1):
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def numpy_attention(features):
    energy = (features.astype("float64") ** 2).sum(axis=-1).reshape(len(features), -1)
    return energy / np.linalg.norm(energy, axis=1, keepdims=True)


def numpy_attention_loss(source, target):
    return np.mean((numpy_attention(source) - numpy_attention(target)) ** 2)


def numpy_distillation(source_logits, old_logits, temperature):
    recorded = softmax(source_logits.astype("float64") / temperature)
    log_predicted = np.log(softmax(old_logits.astype("float64") / temperature))
    return -np.mean(np.sum(recorded * log_predicted, axis=1))


def pieces(model, seed=0):
    """The batch's source maps, the target's outputs and the model's matching loss at its current weights."""
    x, y = batch(seed=seed)
    source_maps = model.source_maps(x)
    theta = [variable.value for variable in model.theta]
    _, matching_loss, _, _ = model.losses_at(theta, x, y, source_maps, model.meta_weights(source_maps))
    _, outputs, _ = model._forward(theta, x)
    return [np.asarray(m) for m in source_maps], [np.asarray(o) for o in outputs], float(matching_loss)


def spread_old_head(model):
    """Larger old-task logits than the 0.01 initialisation gives, so that the temperature matters."""
    kernel = model.old_head.kernel
    kernel.assign(np.random.default_rng(4).normal(size=kernel.shape).astype(kernel.dtype))


def test_attention_loss_is_the_normalised_squared_activation_map_difference():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 5))
    q = (target**2).sum(-1).reshape(2, 16)
    assert np.allclose(np.linalg.norm(numpy_attention(target), axis=1), 1.0)
    np.testing.assert_allclose(numpy_attention(target), q / np.sqrt((q**2).sum(1, keepdims=True)))
    expected = numpy_attention_loss(source, target)
    assert expected > 0
    np.testing.assert_allclose(float(baselines.attention_loss(source, target)), expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_is_the_softened_cross_entropy(temperature):
    rng = np.random.default_rng(1)
    source_logits, old_logits = rng.normal(size=(3, 5)) * 3, rng.normal(size=(3, 5))
    expected = numpy_distillation(source_logits, old_logits, temperature)
    got = float(baselines.distillation_loss(source_logits, old_logits, temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert baselines.TEMPERATURE == 2.0  # Li & Hoiem (2017)


def test_fm_single_matches_one_middle_pair_through_its_regressor():
    keras.utils.set_random_seed(0)
    model = tiny_model("fm_single")
    assert model.pairs == [(1, 1)] and model.attention_pairs == [] and model.old_head is None
    assert model.beta == 0.5 and len(model.adapters) == 1 and not model.phi
    source_maps, outputs, matching_loss = pieces(model)
    kernel, bias = (np.asarray(v, "float64") for v in model.adapters[0].weights)
    regressed = outputs[1].astype("float64") @ kernel + bias  # FitNets' regressor: a 1x1 convolution
    expected = np.mean((source_maps[1] - regressed) ** 2)  # uniform over channels and positions
    np.testing.assert_allclose(matching_loss, expected, rtol=1e-5)


def test_at_matches_attention_maps_of_equal_resolution_pairs_at_beta_1000():
    keras.utils.set_random_seed(0)
    model = tiny_model("at")
    assert model.pairs == [] and model.attention_pairs == [(0, 0), (1, 1)] and not model.adapters
    assert model.beta == 1.0 and baselines.AT_BETA == 1000.0
    source_maps, outputs, matching_loss = pieces(model)
    expected = 1000.0 / 2 * sum(numpy_attention_loss(source_maps[m], outputs[n]) for m, n in model.attention_pairs)
    assert expected > 0
    np.testing.assert_allclose(matching_loss, expected, rtol=1e-5)


def test_lwf_distils_the_source_classifier_into_a_second_head_on_the_pooled_features():
    keras.utils.set_random_seed(0)
    model = tiny_model("lwf")
    assert model.pairs == [] and model.attention_pairs == [] and model.beta == 1.0
    assert model.old_head.units == 7  # the source classifier's classes
    spread_old_head(model)
    x, _ = batch()
    source_maps, outputs, matching_loss = pieces(model)
    np.testing.assert_allclose(source_maps[-1], np.asarray(model.source(x)), rtol=1e-6)  # the source's own logits
    pooled = outputs[1].astype("float64").mean(axis=(1, 2))  # the target's classifier input: pooled last tap
    kernel, bias = (np.asarray(v, "float64") for v in model.old_head.weights)
    expected = numpy_distillation(source_maps[-1], pooled @ kernel + bias, temperature=2.0)
    np.testing.assert_allclose(matching_loss, expected, rtol=1e-5)


def test_lwf_at_adds_both_terms():
    keras.utils.set_random_seed(0)
    model = tiny_model("lwf_at")
    spread_old_head(model)
    source_maps, outputs, matching_loss = pieces(model)
    attention = 500.0 * sum(numpy_attention_loss(source_maps[m], outputs[n]) for m, n in [(0, 0), (1, 1)])
    kernel, bias = (np.asarray(v, "float64") for v in model.old_head.weights)
    old_logits = outputs[-2].astype("float64") @ kernel + bias
    expected = attention + numpy_distillation(source_maps[-1], old_logits, temperature=2.0)
    np.testing.assert_allclose(matching_loss, expected, rtol=1e-5)


@pytest.mark.parametrize("method", baselines.METHODS)
def test_one_step_moves_the_target_and_its_extras_and_the_term_changes_the_step(method):
    def stepped(beta):
        keras.utils.set_random_seed(3)
        model = tiny_model(method, beta=beta)
        model.compile()
        source = [v.numpy().copy() for v in model.source.weights]
        extras = [v for layer in model.adapters + [model.old_head] if layer is not None for v in layer.weights]
        before = [v.numpy().copy() for v in extras]
        model.train_on_batch(*batch())
        for value, variable in zip(source, model.source.weights, strict=True):
            np.testing.assert_array_equal(value, variable.numpy())  # the source stays frozen
        moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, extras, strict=True)]
        assert all(moved) or beta == 0.0  # at beta 0 the zero-initialised bias has no gradient
        return model

    model, without_term = stepped(None), stepped(0.0)
    assert bool(model.adapters) == (method == "fm_single") and (model.old_head is not None) == ("lwf" in method)
    kernel = model.target.get_layer("c1").kernel.numpy()
    assert not np.allclose(kernel, without_term.target.get_layer("c1").kernel.numpy(), rtol=0, atol=1e-9)


def test_default_pairs_and_heads_for_resnet32_and_vgg9():
    source = backbones.build("resnet32", num_classes=baselines.old_task_classes("lwf"))
    shapes = {}
    for method in baselines.METHODS:
        model = L2TModel(source, backbones.build("vgg9", num_classes=10), method=method)
        shapes[method] = (model.pairs, model.attention_pairs, model.old_head and model.old_head.units)
    assert shapes["fm_single"] == ([(1, 2)], [], None)  # 16x16x32 source stage -> relu4, 256 at 8x8
    assert shapes["at"] == ([], [(0, 0), (1, 1), (2, 2)], None)
    assert shapes["lwf"] == ([], [], 200) and shapes["lwf_at"] == ([], [(0, 0), (1, 1), (2, 2)], 200)
    assert baselines.old_task_classes("at") is None


def test_errors_say_how_to_fix_them():
    with pytest.raises(ValueError, match="build the source with its classifier"):
        L2TModel(tiny_source(), tiny_target(), method="lwf", source_taps=["a", "b"], target_taps=["t1", "t2"])
    with pytest.raises(ValueError, match="attention maps of equal size"):
        tiny_model("at", pairs=[(0, 1)])
    assert tiny_model("at", beta=0.25).beta == 0.25
