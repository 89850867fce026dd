import json

import numpy as np
import pytest

from keras_l2t.analysis import transferability

CASES = (0, 1, 2)


@pytest.fixture(scope="module")
def oracle(shared):
    """Inputs and outputs of the reference code (thuml/LogME), see ../shared/oracles/README.md."""
    arrays = np.load(shared / "oracles" / "transferability_cases.npz")
    expected = json.loads((shared / "oracles" / "transferability_expected.json").read_text())
    return {name: arrays[name] for name in arrays.files}, expected


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("algorithm, key", [("fixed_point", "logme"), ("icml", "logme_icml")])
def test_logme_equals_the_reference(oracle, case, algorithm, key):
    arrays, expected = oracle
    score = transferability.logme(arrays[f"features_{case}"], arrays["labels"], algorithm=algorithm)
    assert score == pytest.approx(expected[f"{key}_{case}"], rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_leep_and_nce_equal_the_reference(oracle, case):
    arrays, expected = oracle
    probabilities, labels = arrays[f"source_probabilities_{case}"], arrays["labels"]
    assert transferability.leep(probabilities, labels) == pytest.approx(expected[f"leep_{case}"], rel=1e-6)
    nce = transferability.nce(probabilities.argmax(axis=1), labels)
    assert nce == pytest.approx(expected[f"nce_{case}"], rel=1e-6)


def test_scores_order_the_oracle_cases_by_separation(oracle):
    arrays, _ = oracle
    labels = arrays["labels"]
    for score in (transferability.logme, transferability.h_score):
        values = [score(arrays[f"features_{case}"], labels) for case in CASES]
        assert values == sorted(values), score.__name__


def test_wide_logme_reproduces_the_reference_and_corrects_it(oracle):
    arrays, expected = oracle
    features, labels = arrays["features_wide"], arrays["labels_wide"]
    reference = transferability.logme(features, labels, full_spectrum=False)
    assert reference == pytest.approx(expected["logme_wide"], rel=1e-6)
    corrected = transferability.logme(features, labels)
    # the reference's N < D value is off by (D - N) / (2N) log alpha; the ICML algorithm has no such gap
    assert corrected == pytest.approx(transferability.logme(features, labels, algorithm="icml"), rel=1e-2)
    assert corrected < reference - 5


@pytest.mark.parametrize("algorithm", ["fixed_point", "icml"])
def test_logme_ignores_constant_zero_features(oracle, algorithm):
    # zero columns add D/2 log alpha and, in log|alpha I + beta F^T F|, -1/2 log alpha each: they cancel
    arrays, _ = oracle
    features, labels = arrays["features_1"], arrays["labels"]
    padded = np.hstack([features, np.zeros((len(features), 30))])
    expected = transferability.logme(features, labels, algorithm=algorithm)
    assert transferability.logme(padded, labels, algorithm=algorithm) == pytest.approx(expected, rel=1e-9)


def test_h_score_by_hand():
    # one feature: 0, 2 (class 0) and 4, 6 (class 1); var f = 20/3, class means 1, 1, 5, 5 have var 16/3
    assert transferability.h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), [0, 0, 1, 1]) == pytest.approx(0.8)
    # a second feature, uncorrelated with the first, whose class means are equal: still 0.8
    features = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, -1.0], [6.0, 1.0]])
    assert transferability.h_score(features, [0, 0, 1, 1]) == pytest.approx(0.8)
    # a feature that is its class: all of its variance lies between classes
    assert transferability.h_score(np.array([[0.0], [0.0], [3.0], [3.0]]), [0, 0, 1, 1]) == pytest.approx(1.0)


def test_leep_and_nce_reward_a_source_that_predicts_the_target():
    labels = np.repeat([0, 1, 2], 10)
    informative = np.full((30, 4), 0.05)
    informative[np.arange(30), labels] = 0.85
    uninformative = np.full((30, 4), 0.25)
    assert transferability.leep(informative, labels) > transferability.leep(uninformative, labels)
    assert transferability.leep(uninformative, labels) == pytest.approx(np.log(1 / 3))
    assert transferability.nce(labels + 1, labels) == pytest.approx(0.0, abs=1e-15)
    assert transferability.nce(np.zeros(30, int), labels) == pytest.approx(-np.log(3))


def test_unknown_algorithm_and_bad_inputs_are_refused():
    features, labels = np.ones((6, 3)), np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="fixed_point, icml"):
        transferability.logme(features, labels, algorithm="mackay")
    with pytest.raises(ValueError, match="one row per label"):
        transferability.logme(features[:5], labels)
    with pytest.raises(ValueError, match="softmax"):
        transferability.leep(features, labels)
    with pytest.raises(ValueError, match="class indices"):
        transferability.h_score(features, labels.astype(float))


def test_too_few_images_per_class_are_refused_with_the_class_name():
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match="'dog' has 3 images.*at least 5"):
        transferability.check_labels(labels, transferability.MINIMUM_PER_CLASS, ["cat", "dog"])
    assert transferability.check_labels(labels, 3).dtype == np.int64
