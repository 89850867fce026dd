"""L2TModel: exact hypergradients, what a step moves, and fit/evaluate/predict/save (issue 4)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.analysis import stats
from keras_l2t.networks import backbones
from keras_l2t.running.backup import RunBackup
from keras_l2t.training import baselines, matching, strategies
from keras_l2t.training.l2t import META_METHODS, METHODS, L2TModel
from keras_l2t.training.optim import TorchAdam, TorchSGD


def tiny_source(classes=None):  # with classes, ends in its own classifier (LwF's old task)
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="b")(a)
    if classes:
        b = keras.layers.Dense(classes, name="fc")(keras.layers.GlobalAveragePooling2D()(b))
    return keras.Model(inputs, b, name="tiny_source")


def tiny_target(classes=3):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU(name="t1")(keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(x))
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="t2")(keras.layers.BatchNormalization(epsilon=1e-5, name="bn2")(x))
    x = keras.layers.Dense(classes, name="classifier")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, x, name="tiny_target")


def tiny_model(method, **kwargs):
    model = L2TModel(
        tiny_source(7 if method in baselines.OLD_TASK_METHODS else None),
        tiny_target(),
        method=method,
        source_taps=["a", "b"],
        target_taps=["t1", "t2"],
        **kwargs,
    )
    return model


def batch(dtype="float32", size=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, 8, 8, 3)).astype(dtype), rng.integers(0, 3, size).astype("int64")


@pytest.fixture
def float64():
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy, once created, no longer follows floatx
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy(policy)


def set_meta_weights(model, seed):
    """Seeded what/which weights and small where kernels (lambda stays near its initial 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.what + model.which:
        for variable in layer.weights:
            variable.assign(variable.numpy() + 0.3 * rng.normal(size=variable.shape))
    for layer in model.where:
        layer.kernel.assign(0.05 * rng.normal(size=layer.kernel.shape))


def meta_gradient_relative_errors(method):
    """Relative errors of the meta-gradient that train_step applies vs central finite differences (float64)."""
    keras.utils.set_random_seed(1)
    model = tiny_model(method, meta_weight_decay=0.0)
    model.compile(optimizer=TorchSGD(0.05), meta_optimizer=keras.optimizers.SGD(1.0))
    assert all(variable.dtype == "float64" for variable in model.phi + model.theta)
    set_meta_weights(model, seed=2)  # away from the symmetric zero initialisation, independent of Keras' RNG
    x, y = batch("float64")
    source_maps = [tf.constant(m) for m in model.source_features(x, training=False)]
    lambdas = np.concatenate([where.numpy() for _, where, _ in model.meta_weights(source_maps)])
    assert np.all((lambdas > 0.05) & (lambdas < 5.95)), "the test needs every lambda inside ReLU6's linear range"
    before = [variable.numpy().copy() for variable in model.phi]
    model.train_on_batch(x, y)
    applied = [b - variable.numpy() for b, variable in zip(before, model.phi, strict=True)]  # SGD lr 1: the gradient

    def outer(direction, epsilon):  # theta and the momentum buffers stay as after the real step
        for variable, value, d in zip(model.phi, before, direction, strict=True):
            variable.assign(value + epsilon * d)
        return float(model.lookahead_loss(x, y, source_maps))

    rng, errors = np.random.default_rng(3), []
    for _ in range(3):
        direction = [rng.normal(size=v.shape) for v in before]
        numeric = (outer(direction, 1e-6) - outer(direction, -1e-6)) / 2e-6
        analytic = sum(float(np.sum(a * d)) for a, d in zip(applied, direction, strict=True))
        errors.append(abs(numeric - analytic) / abs(numeric))
    return errors


@pytest.mark.parametrize("method", ["l2t_ww", "l2t_www"])
def test_applied_meta_gradient_matches_finite_differences(method, float64):
    assert max(meta_gradient_relative_errors(method)) < 1e-3


def test_keras_batch_norm_moments_would_make_the_meta_gradient_inexact(float64, monkeypatch):
    """Why `use_exact_batch_norm` exists: tf.nn.moments stops the gradient of the mean inside the variance."""
    monkeypatch.setattr(matching, "use_exact_batch_norm", lambda model: 0)
    assert max(meta_gradient_relative_errors("l2t_ww")) > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_one_step_moves_theta_and_phi_and_never_the_source(method):
    keras.utils.set_random_seed(5)
    model = tiny_model(method)
    model.compile()
    source = [v.numpy().copy() for v in model.source.weights]
    theta = [v.numpy().copy() for v in model.theta]
    phi = [v.numpy().copy() for v in model.phi]
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert set(logs) >= {"loss", "ce", "matching", "meta_loss", "accuracy"}
    for before, variable in zip(source, model.source.weights, strict=True):
        np.testing.assert_array_equal(before, variable.numpy())
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(theta, model.theta, strict=True)), "every theta moves"
    if method in ("l2t_ww", "l2t_www"):
        assert all(not np.array_equal(b, v.numpy()) for b, v in zip(phi, model.phi, strict=True)), "every phi moves"
    else:
        assert phi == [] and float(logs["meta_loss"]) == 0.0
    if method == "scratch":
        assert float(logs["matching"]) == 0.0


def test_batch_norm_statistics_move_once_per_step():
    keras.utils.set_random_seed(6)
    model = tiny_model("l2t_ww")
    model.compile()
    x, y = batch()
    layer = model.target.get_layer("bn1")
    expected_mean = layer.momentum * layer.moving_mean.numpy() + (1 - layer.momentum) * np.mean(
        model.target.get_layer("c1")(x).numpy(), axis=(0, 1, 2)
    )
    model.train_on_batch(x, y)
    np.testing.assert_allclose(layer.moving_mean.numpy(), expected_mean, rtol=1e-4, atol=1e-6)


def test_fit_evaluate_predict_and_the_target_saves_as_plain_keras(tmp_path):
    keras.utils.set_random_seed(7)
    model = tiny_model("l2t_www")
    model.compile()
    x, y = batch(size=12)
    history = model.fit(x, y, batch_size=6, epochs=2, verbose=0, validation_data=(x, y))
    assert {"loss", "ce", "matching", "meta_loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    predictions = model.predict(x, verbose=0)
    assert predictions.shape == (12, 3)
    np.testing.assert_allclose(predictions, model.target.predict(x, verbose=0), rtol=1e-6)
    model.target.save(tmp_path / "target.keras")
    reloaded = keras.models.load_model(tmp_path / "target.keras")
    assert all(type(layer).__module__.startswith("keras.") for layer in reloaded.layers)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), predictions, rtol=1e-5, atol=1e-6)


def test_default_pairs_follow_the_paper_for_resnet32_and_vgg9():
    source = backbones.build("resnet32")
    l2t = L2TModel(source, backbones.build("vgg9", num_classes=10), method="l2t_ww")
    assert [tuple(o.shape[1:]) for o in l2t.source_features.outputs] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
    assert len(l2t.pairs) == 15
    ufm = L2TModel(source, backbones.build("vgg9", num_classes=10), method="ufm")
    assert ufm.pairs == [(0, 0), (1, 1), (2, 2)]


def test_errors_are_explained():
    with pytest.raises(ValueError, match="Unknown method 'l2t'"):
        tiny_model("l2t")
    with pytest.raises(TypeError, match="TorchSGD"):
        tiny_model("l2t_ww").compile(optimizer=keras.optimizers.SGD(0.1))
    source = backbones.build("resnet32")
    with pytest.raises(ValueError, match="no target tap has the size"):
        L2TModel(source, backbones.build("lenet5", num_classes=10), method="ufm")


def test_an_adapter_draws_its_bias_apart_from_its_kernel():
    adapter = matching.make_adapter(64, 32, "adapter")
    kernel, bias = (np.asarray(variable) for variable in (adapter.kernel, adapter.bias))
    assert np.all(np.abs(kernel) <= 1 / 8) and np.all(np.abs(bias) <= 1 / 8) and np.std(bias) > 0
    assert not np.allclose(bias, kernel.ravel()[: bias.size])


def test_which_network_starts_at_one_and_stays_non_negative():
    layer = matching.WhichNetwork(4, 4)
    gamma = layer(tf.random.normal((2, 16, 16, 4)), output_size=(8, 8))
    np.testing.assert_allclose(gamma.numpy(), 1.0, rtol=1e-6)
    layer.kernel.assign(tf.random.normal(layer.kernel.shape) * 5)
    assert float(tf.reduce_min(layer(tf.random.normal((2, 16, 16, 4)), output_size=(8, 8)))) >= 0.0


@pytest.mark.parametrize(("size_in", "size_out"), [(32, 2), (32, 8), (8, 32), (3, 16), (16, 16), (5, 3)])
def test_resize_equals_tensorflow_bilinear_without_antialiasing(size_in, size_out):
    maps = tf.random.normal((2, size_in, size_in, 3))
    expected = tf.image.resize(maps, (size_out, size_out), method="bilinear", antialias=False)
    np.testing.assert_allclose(matching.resize(maps, (size_out, size_out)).numpy(), expected.numpy(), atol=1e-5)


def test_average_matrix_pools_windows():
    np.testing.assert_allclose(matching.average_matrix(8, 4) @ np.arange(8.0), [0.5, 2.5, 4.5, 6.5])


def test_meta_weights_logger_writes_where_what_and_which(tmp_path):
    from keras_l2t.training.callbacks import MetaWeightsLogger, read_scalars

    keras.utils.set_random_seed(8)
    model = tiny_model("l2t_www")
    model.compile()
    x, y = batch(size=6)
    model.fit(x, y, batch_size=6, epochs=2, verbose=0, callbacks=[MetaWeightsLogger(x, str(tmp_path / "run"))])
    scalars = read_scalars(str(tmp_path / "run"))
    pairs = len(model.pairs)
    assert len([tag for tag in scalars if tag.startswith("where/")]) == pairs
    entropies = [values for tag, values in scalars.items() if tag.startswith("what_entropy/")]
    assert len(entropies) == pairs and all(len(values) == 2 for values in entropies)
    assert all(0 < value <= np.log(6) + 1e-6 for values in entropies for _, value in values)
    tags = set()
    for record in tf.data.TFRecordDataset([str(p) for p in (tmp_path / "run" / "meta").glob("events*")]):
        tags |= {value.tag for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
    assert any(tag.startswith("which/") for tag in tags) and any(tag.startswith("what/") for tag in tags)
    drift = stats.meta_weight_drift(str(tmp_path), ["run"])  # what the comparison summary reports
    assert len(drift) == pairs and (drift["epochs"] == 2).all()
    first_pair = drift.iloc[0]
    assert first_pair["where_last"] == pytest.approx(scalars[f"where/{first_pair['pair']}"][1][1])
    assert first_pair["what_entropy_first"] == pytest.approx(scalars[f"what_entropy/{first_pair['pair']}"][0][1])
    assert "| run | 2 |" in stats.meta_drift_table(drift)


def test_reference_cosine_schedule():
    from keras_l2t.training.optim import reference_cosine

    schedule = reference_cosine(200)
    assert abs(schedule(0) - 0.05 * (1 + np.cos(np.pi / 200))) < 1e-12
    assert schedule(199) == pytest.approx(0.0, abs=1e-12)


def test_torch_sgd_matches_the_pytorch_update_rule():
    variable = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = TorchSGD(0.1, momentum=0.9, coupled_weight_decay=0.01)
    expected, velocity = np.array([1.0, -2.0]), np.zeros(2)
    for gradient in (np.array([0.5, 0.25]), np.array([-1.0, 2.0])):
        optimizer.apply_gradients([(tf.constant(gradient, "float32"), variable)])
        velocity = 0.9 * velocity + gradient + 0.01 * expected
        expected = expected - 0.1 * velocity
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


def test_torch_adam_matches_pytorch_where_keras_adam_does_not():
    """PyTorch's Adam adds eps after the bias correction; gradients near eps tell the two apart."""
    gradients = [np.array([3e-3, 2e-8, -1e-8]), np.array([1e-3, 5e-9, 2e-8]), np.array([-2e-3, 1e-8, 1e-8])]

    def final_values(optimizer):
        variable = keras.Variable(np.array([1.0, -2.0, 0.5]), dtype="float64")
        for gradient in gradients:
            optimizer.apply_gradients([(tf.constant(gradient, "float64"), variable)])
        return variable.numpy()

    expected, first, second = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for step, gradient in enumerate(gradients, 1):  # torch.optim.Adam, Kingma and Ba's Algorithm 1
        first, second = 0.9 * first + 0.1 * gradient, 0.999 * second + 0.001 * gradient**2
        denominator = np.sqrt(second / (1 - 0.999**step)) + 1e-8
        expected = expected - 1e-4 / (1 - 0.9**step) * first / denominator
    torch_adam = final_values(TorchAdam(1e-4, epsilon=1e-8))
    np.testing.assert_allclose(torch_adam, expected, rtol=0, atol=2e-11)  # Keras keeps the rate in float32
    keras_adam = final_values(keras.optimizers.Adam(1e-4, epsilon=1e-8))
    assert np.abs(keras_adam - expected)[1:].max() > 1e-5  # a sizeable share of the 3e-4 moved in three steps


@pytest.mark.parametrize(  # the last meta method (L2T-www, every meta-network) in the default run, the others slow
    "method", [pytest.param(method, marks=pytest.mark.slow) for method in META_METHODS[:-1]] + [META_METHODS[-1]]
)
def test_a_run_backup_restores_target_meta_networks_and_both_optimizers(method, tmp_path):
    inputs, labels = batch()
    model = tiny_model(method)
    model.compile()
    model.fit(inputs, labels, batch_size=3, epochs=2, verbose=0, callbacks=[RunBackup(str(tmp_path))])
    resumed = tiny_model(method)  # a fresh initialisation
    resumed.compile()
    backup = RunBackup(str(tmp_path))
    backup.set_model(resumed)
    backup.set_params({"epochs": 3})
    backup.on_train_begin()
    variables = [
        list(network.weights) + list(network.optimizer.variables) + list(network.meta_optimizer.variables)
        for network in (model, resumed)
    ]
    for mine, theirs in zip(*variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    history = resumed.fit(inputs, labels, batch_size=3, epochs=3, verbose=0, callbacks=[RunBackup(str(tmp_path))])
    assert len(history.history["loss"]) == 1  # epochs 1 and 2 came from the backup
    assert int(resumed.optimizer.iterations) == int(resumed.meta_optimizer.iterations) == 6


def test_meta_every_k_takes_the_meta_step_on_every_kth_iteration():
    keras.utils.set_random_seed(9)
    model = tiny_model("l2t_ww", meta_every=3)
    model.compile()
    x, y = batch()
    moved = []
    for _ in range(5):
        before = [v.numpy().copy() for v in model.phi]
        model.fit(x, y, batch_size=6, epochs=1, verbose=0)  # one iteration, under the compiled train_step
        moved.append(any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.phi, strict=True)))
    assert moved == [True, False, False, True, False] and int(model.meta_optimizer.iterations) == 2
    with pytest.raises(ValueError, match="meta_every must be"):
        tiny_model("l2t_ww", meta_every=0)


@pytest.mark.parametrize("weights", ["sample_weight", "class_weight"])
def test_sample_and_class_weights_are_refused_not_ignored(weights):
    keras.utils.set_random_seed(0)
    model = strategies.build("fm_uniform", num_classes=3, source="lenet5", source_weights=None, target="lenet5",
                             input_shape=(32, 32, 3))  # fmt: skip
    images, labels = np.zeros((6, 32, 32, 3), "float32"), np.arange(6) % 3
    class_weight = {0: 1.0, 1: 2.0, 2: 1.0}
    options = {"sample_weight": np.ones(6)} if weights == "sample_weight" else {"class_weight": class_weight}
    with pytest.raises(ValueError, match="does not support sample_weight or class_weight"):
        model.fit(images, labels, batch_size=6, epochs=1, verbose=0, **options)
    with pytest.raises(ValueError, match="does not support sample_weight"):
        model.evaluate(images, labels, sample_weight=np.ones(6), verbose=0)
