import keras
import numpy as np
import pytest

from keras_l2t.networks import backbones
from keras_l2t.running.config import RunConfig
from keras_l2t.training import freezing, strategies
from keras_l2t.training.l2t import L2TModel

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
    strategy, network = strategies.spec(name), getattr(model, "network", model)  # regularised: its network
    base = network.get_layer("vgg9")
    head = network.get_layer("head_classifier").weights
    statistics = [v for v in base.weights if is_moving_statistic(v)]
    if strategy.trainable == "none":
        return head, head, base.weights
    if strategy.trainable == "last":
        last = {layer for group in backbones.blocks(base)[-2:] for layer in group}
        inside = [v for layer in base.layers if layer.name in last for v in layer.trainable_weights]
        outside = [v for layer in base.layers if layer.name not in last for v in layer.weights]
        return head + inside, head + inside, outside + batch_norm_weights(base)
    trainable = head + base.trainable_weights
    if strategy.pretrained:  # full fine-tuning and its regularised kin: BatchNorm frozen, in inference mode
        prepared = [model.attention] if strategy.penalties else []  # DELTA's attention, set before the first step
        return trainable, trainable + prepared, batch_norm_weights(base)
    return trainable + statistics, trainable + statistics, []  # scratch: BatchNorm trains


@pytest.mark.parametrize("name", strategies.names())
def test_one_step_moves_exactly_the_intended_weights(name):
    model = build(name)
    must, allowed, frozen = expected_to_train(model, name)
    everything = model.weights
    before = snapshot(everything)
    # one step of the real networks: eagerly, as tracing the second-order step costs 4x the step itself here
    # (the compiled step is what tests/test_l2t.py checks, on small networks)
    model.run_eagerly = isinstance(model, L2TModel)
    model.fit(*BATCH, batch_size=8, epochs=1, verbose=0)
    moved = changed(before, everything)
    assert must and ids(frozen).isdisjoint(moved), "a frozen weight changed"
    assert ids(must) <= moved, f"did not move: {[v.path for v in must if id(v) not in moved][:5]}"
    assert moved <= ids(allowed), f"moved unexpectedly: {[v.path for v in everything if id(v) in moved - ids(allowed)]}"


@pytest.mark.parametrize("name", strategies.names())
def test_every_strategy_predicts_logits_and_evaluates(name):
    model = build(name)
    logits = model.predict(BATCH[0], verbose=0)
    assert logits.shape == (8, 4)
    expected = float(np.mean(logits.argmax(axis=1) == BATCH[1]))  # evaluate's accuracy is that of predict
    assert model.evaluate(*BATCH, verbose=0, return_dict=True)["accuracy"] == pytest.approx(expected)
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
    freezing.unfreeze(model, learning_rate=1e-5)
    base = model.get_layer("vgg9")
    assert base.trainable_weights and float(model.optimizer.learning_rate) == pytest.approx(1e-5)
    before = snapshot(base.weights)
    model.fit(*BATCH, batch_size=8, epochs=1, verbose=0)
    moved = changed(before, base.weights)
    assert moved and moved.isdisjoint(ids(batch_norm_weights(base)))


def test_scratch_with_a_target_trains_like_the_matching_methods():
    model = strategies.build("scratch", num_classes=4, family="matching", target="vgg9", source_weights=None)
    assert isinstance(model, L2TModel) and model.method == "scratch"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)  # the reference rate, not the classic 1e-3
    kinds = [type(callback).__name__ for callback in strategies.callbacks(model, epochs=10)]
    assert kinds == ["TerminateOnNaN", "LearningRateScheduler"]
    assert [type(c).__name__ for c in strategies.callbacks(build("scratch"), epochs=10)] == ["TerminateOnNaN"]
    with pytest.warns(UserWarning, match="learning rate 0"):
        strategies.callbacks(model, epochs=1)  # the reference schedule's only epoch would be its last, at rate 0


def test_cosine_decay_when_the_run_length_is_known():
    model = strategies.build("scratch", num_classes=4, backbone="lenet5", weights=None, epochs=2, steps_per_epoch=5)
    rates = []
    for step in (0, 5, 10):  # cosine from 1e-3 to 0 over the 10 steps of the run
        model.optimizer.iterations.assign(step)
        rates.append(float(model.optimizer.learning_rate))
    assert rates == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)
    unknown_length = strategies.build("scratch", num_classes=4, backbone="lenet5", weights=None)
    unknown_length.optimizer.iterations.assign(10)
    assert float(unknown_length.optimizer.learning_rate) == pytest.approx(1e-3)


def test_errors_name_the_choices():
    with pytest.raises(KeyError, match="full_fine_tune"):
        strategies.spec("full_finetune")
    with pytest.raises(ValueError, match="needs a backbone"):
        strategies.build("feature_extraction", num_classes=2)
    with pytest.raises(ValueError, match="at least 32x32"):
        strategies.build("feature_extraction", backbone="mobilenet_v2", num_classes=2, weights=None,
                         input_shape=(16, 16, 3))  # fmt: skip
    with pytest.raises(ValueError, match="ufm trains only with the matching loop"):
        strategies.resolve("ufm", "classic")
    with pytest.raises(ValueError, match="Unknown family 'meta'"):
        strategies.resolve("scratch", "meta")


@pytest.mark.parametrize("name", strategies.names())
def test_the_registry_decides_family_rate_and_meta(name):
    own = strategies.spec(name)
    assert strategies.resolve(name) is own and own.family in strategies.FAMILIES
    assert own.meta == (name in ("l2t_ww", "l2t_www"))
    if own.family == "matching":
        assert own.learning_rate == strategies.MATCHING_LEARNING_RATE


def test_scratch_trains_with_the_matching_loop_beside_matching_methods():
    matched = strategies.resolve("scratch", "matching")
    assert matched.family == "matching" and matched.learning_rate == strategies.MATCHING_LEARNING_RATE
    assert strategies.scratch_family(["scratch", "ufm"]) == "matching"
    assert strategies.scratch_family(["scratch", "full_fine_tune"]) == "classic"
    assert strategies.scratch_family(["scratch", "ufm"], "classic") == "classic"


@pytest.mark.parametrize("strategy", strategies.names("classic"))
def test_a_zero_initialised_head_starts_every_prediction_uniform(strategy):
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    zeros = build(strategy, head_init="zeros")
    head = getattr(zeros, "network", zeros).get_layer("head_classifier")  # penalised: the wrapped network's
    assert not np.any(head.kernel.numpy())
    probabilities = keras.ops.softmax(zeros(images, training=False)).numpy()
    np.testing.assert_allclose(probabilities, 0.25, rtol=1e-5)  # loss log C, however large the features
    glorot = build(strategy)
    assert np.any(getattr(glorot, "network", glorot).get_layer("head_classifier").kernel.numpy())
    with pytest.raises(ValueError, match="head_init"):
        RunConfig(strategy, head_init="ones")
