import keras
import numpy as np
import pytest

from keras_l2t import backbones, strategies
from keras_l2t.l2t import L2TModel

BATCH = (
    np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32"),
    np.arange(8) % 4,
)


def snapshot(variables):  # by identity: source and target may both have a "conv1/kernel"
    return {id(variable): np.array(variable.numpy()) for variable in variables}


def changed(before, variables):
    return {id(variable) for variable in variables if not np.array_equal(before[id(variable)], variable.numpy())}


def ids(variables):
    return {id(variable) for variable in variables}


def build(name, **options):
    keras.utils.set_random_seed(0)
    if strategies.spec(name).family == "matching":
        return strategies.build(name, num_classes=4, source_weights=None, target="vgg9", input_shape=(32, 32, 3))
    return strategies.build(name, num_classes=4, backbone="vgg9", weights=None, input_shape=(32, 32, 3), **options)


def is_moving_statistic(variable):
    return "moving_mean" in variable.path or "moving_variance" in variable.path


def batch_norm_weights(base):
    return [v for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights]


def expected_to_train(model, name):
    """(weights one step must move, weights it may move, weights it must leave bit-identical)."""
    if strategies.spec(name).family == "matching":
        # a what network whose pair has lambda = 0 everywhere (ReLU6 closed) gets an exact zero gradient, and its
        # zero-initialised weights no decay: require the where networks and at least one what network to move
        where = [v for layer in model.where for v in layer.weights]
        must = model.theta + where + (model.what[0].weights if model.what else [])
        return must, model.theta + model.phi + model.target.weights, model.source.weights
    base = model.get_layer("vgg9")
    head = model.get_layer("head_classifier").weights
    statistics = [v for v in base.weights if is_moving_statistic(v)]
    if name == "feature_extraction":
        return head, head, base.weights
    if name == "fine_tune_last":
        last = {layer for group in backbones.blocks(base)[-2:] for layer in group}
        inside = [v for layer in base.layers if layer.name in last for v in layer.trainable_weights]
        outside = [v for layer in base.layers if layer.name not in last for v in layer.weights]
        return head + inside, head + inside, outside + batch_norm_weights(base)
    trainable = head + base.trainable_weights
    if name == "full_fine_tune":  # BatchNorm frozen, in inference mode: gamma, beta and statistics stay
        return trainable, trainable, batch_norm_weights(base)
    return trainable + statistics, trainable + statistics, []  # scratch: BatchNorm trains


@pytest.mark.parametrize("name", strategies.names())
def test_one_step_moves_exactly_the_intended_weights(name):
    model = build(name)
    must, allowed, frozen = expected_to_train(model, name)
    everything = model.weights
    before = snapshot(everything)
    model.fit(*BATCH, batch_size=8, epochs=1, verbose=0)
    moved = changed(before, everything)
    assert must and ids(frozen).isdisjoint(moved), "a frozen weight changed"
    assert ids(must) <= moved, f"did not move: {[v.path for v in must if id(v) not in moved][:5]}"
    assert moved <= ids(allowed), f"moved unexpectedly: {[v.path for v in everything if id(v) in moved - ids(allowed)]}"


@pytest.mark.parametrize("name", strategies.names())
def test_every_strategy_predicts_logits_and_evaluates(name):
    model = build(name)
    assert model.predict(BATCH[0], verbose=0).shape == (8, 4)
    assert 0.0 <= model.evaluate(*BATCH, verbose=0, return_dict=True)["accuracy"] <= 1.0
    assert isinstance(model, L2TModel) == (strategies.spec(name).family == "matching")


def test_fine_tune_last_follows_the_backbone_blocks():
    model = strategies.build("fine_tune_last", backbone="squeezenet1_1", num_classes=3, weights=None,
                             input_shape=(64, 64, 3))  # fmt: skip
    base = model.get_layer("squeezenet1_1")
    trained = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert trained == {f"fire{n}_{part}" for n in (8, 9) for part in ("squeeze1x1", "expand1x1", "expand3x3")}


def test_two_phase_recipe_unfreezes_and_keeps_batch_norm_in_inference():
    model = build("feature_extraction")
    assert not model.get_layer("vgg9").trainable_weights
    strategies.unfreeze(model, learning_rate=1e-5)
    base = model.get_layer("vgg9")
    assert base.trainable_weights and float(model.optimizer.learning_rate) == pytest.approx(1e-5)
    before = snapshot(base.weights)
    model.fit(*BATCH, batch_size=8, epochs=1, verbose=0)
    moved = changed(before, base.weights)
    assert moved and moved.isdisjoint(ids(batch_norm_weights(base)))


def test_scratch_with_a_target_trains_like_the_matching_methods():
    model = strategies.build("scratch", num_classes=4, target="vgg9", source_weights=None)
    assert isinstance(model, L2TModel) and model.method == "scratch"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)  # the reference rate, not the classic 1e-3
    assert len(strategies.callbacks(model, epochs=10)) == 1
    assert strategies.callbacks(build("scratch"), epochs=10) == []


def test_cosine_decay_when_the_run_length_is_known():
    model = strategies.build("scratch", num_classes=4, backbone="lenet5", weights=None, epochs=2, steps_per_epoch=5)
    schedule = model.optimizer.learning_rate
    assert float(model.optimizer._get_current_learning_rate()) == pytest.approx(1e-3)
    assert schedule is not None


def test_errors_name_the_choices():
    with pytest.raises(KeyError, match="full_fine_tune"):
        strategies.spec("full_finetune")
    with pytest.raises(ValueError, match="needs a backbone"):
        strategies.build("feature_extraction", num_classes=2)
    with pytest.raises(ValueError, match="at least 32x32"):
        strategies.build("feature_extraction", backbone="mobilenet_v2", num_classes=2, weights=None,
                         input_shape=(16, 16, 3))  # fmt: skip
    assert "l2t_www" in strategies.describe()
