import numpy as np

from keras_l2t.training import probe


def test_logistic_regression_separates_separable_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    labels = rng.integers(0, 3, 300)
    features = centres[labels] + rng.normal(size=(300, 8))
    predict = probe.fit_logistic_regression(features[:200], labels[:200])
    assert np.mean(predict(features[200:]) == labels[200:]) > 0.95


def test_logistic_regression_is_at_chance_on_noise():
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(400, 5)), rng.integers(0, 2, 400)
    predict = probe.fit_logistic_regression(features[:200], labels[:200])
    assert 0.35 < np.mean(predict(features[200:]) == labels[200:]) < 0.65


def test_linear_classifier_weights_act_on_raw_features():
    rng = np.random.default_rng(2)
    features, labels = rng.normal(size=(120, 4)), rng.integers(0, 3, 120)
    scale, shift = np.array([10.0, 0.5, 3.0, 1.0]), np.array([3.0, -2.0, 0.0, 7.0])
    # standardising makes both fits the same problem, so their raw-feature logits must agree
    weights, bias = probe.fit_linear_classifier(features, labels)
    scaled_weights, scaled_bias = probe.fit_linear_classifier(features * scale + shift, labels)
    np.testing.assert_allclose(
        features @ weights + bias, (features * scale + shift) @ scaled_weights + scaled_bias, rtol=1e-4, atol=1e-4
    )
