import numpy as np

from keras_l2t import probe


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
