import numpy as np
import pytest
from conftest import load_app, tiny_image_folder

from keras_l2t.analysis import ranking, ranking_report
from keras_l2t.datasets import data
from keras_l2t.networks import backbones
from keras_l2t.training import features

OPTIONS = dict(samples_per_class=6, validation=6, seed=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("tiny"), train=12, test=2)


def lenet(size=32, taps=("relu1", "relu2"), weights=None):
    return [ranking.Candidate("lenet5", weights, size, tap) for tap in taps]


def test_parse_candidates_expands_sizes_and_taps():
    candidates = ranking.parse_candidates(["mobilenet_v2@96,160/block_13_expand_relu,out_relu", "squeezenet1_1"])
    names = [candidate.name for candidate in candidates]
    assert names[:4] == [
        "mobilenet_v2@96/block_13_expand_relu",
        "mobilenet_v2@96/out_relu",
        "mobilenet_v2@160/block_13_expand_relu",
        "mobilenet_v2@160/out_relu",
    ]
    assert names[4] == "squeezenet1_1@224/fire9_concat"  # its usual size and last tap
    assert {candidate.weights for candidate in candidates} == {"imagenet"}
    every = ranking.parse_candidates(["resnet32@32/all"], {"resnet32": "model.npz"})
    assert [c.tap for c in every] == list(backbones.spec("resnet32").taps) and every[0].weights == "model.npz"
    assert ranking.parse_candidates(["resnet32"])[0].source_classes == 200
    assert ranking.weights_label("../w/mobilenet_v2_1.0_224_notop.weights.h5") == "mobilenet_v2_1.0_224_notop"
    assert ranking.weights_label("imagenet") == "imagenet" and ranking.weights_label(None) == "random"


@pytest.mark.parametrize(
    "text, message",
    [("mobilenet_v2/conv1", "no tap 'conv1'"), ("mobilenet_v2@big", "sizes must be integers"), ("lenet5", "--weights")],
)
def test_parse_candidates_refuses_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        ranking.parse_candidates([text])


def test_rank_scores_each_tap_from_one_pass_and_probes_it(folder):
    rows = ranking.rank(folder, lenet(), validate=True, **OPTIONS)
    assert [row.candidate.tap for row in rows] == ["relu1", "relu2"]
    assert rows[0].seconds["features"] == rows[1].seconds["features"]  # one forward pass for both taps
    assert [row.dims for row in rows] == [6, 16]  # lenet5's relu1 and relu2 channels
    for row in rows:
        assert {"logme", "logme_icml", "logme_reference", "h_score"} == set(row.scores)
        assert "no source classifier" in row.notes[0]
        assert 0 <= row.probe_accuracy <= 1 and row.seconds["probe"] > 0


def test_rank_passes_each_tap_its_own_features(folder, monkeypatch):
    seen = []
    monkeypatch.setattr(ranking, "FEATURE_SCORES", {"logme": lambda values, labels: seen.append(values) or 0.0})
    ranking.rank(folder, lenet(), **OPTIONS)
    splits = data.load(folder, backbone="lenet5", image_size=32, augment="none", batch_size=64, **OPTIONS)
    assert [len(values) for values in seen] == [len(splits.train_indices)] * 2
    assert [values.shape[1] for values in seen] == [6, 16]  # lenet5's relu1 and relu2 channels, in order


def test_source_classifier_gives_leep_and_nce(folder, monkeypatch):
    monkeypatch.setitem(ranking.SOURCE_CLASSES, ("lenet5", None), 7)
    (row,) = ranking.rank(folder, lenet(taps=("relu2",)), **OPTIONS)
    assert set(row.scores) >= {"leep", "nce"} and not row.notes
    assert row.scores["leep"] < 0 and row.scores["nce"] <= 0


def test_too_few_images_per_class_are_refused(folder):
    with pytest.raises(ValueError, match="at least 5 images per class"):
        ranking.rank(folder, lenet(), samples_per_class=3, validation=6)


def test_pooled_outputs_average_each_output_over_space():
    import keras
    import tensorflow as tf

    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, [inputs * 2.0, keras.layers.GlobalAveragePooling2D()(inputs)])
    images = np.arange(3 * 4 * 4 * 2, dtype="float32").reshape(3, 4, 4, 2)
    batches = tf.data.Dataset.from_tensor_slices((images, np.array([0, 1, 0]))).batch(2)
    (doubled, pooled), labels = features.pooled_outputs(model, batches)
    np.testing.assert_allclose(doubled, 2 * images.mean(axis=(1, 2)))
    np.testing.assert_allclose(pooled, images.mean(axis=(1, 2)))
    assert labels.tolist() == [0, 1, 0]


def rows_with(scores, accuracies):
    candidates = lenet(taps=[f"tap{index}" for index in range(len(scores))])
    return [
        ranking.Row(candidate, 4, {"logme": score, "h_score": -score}, {"features": 1.0}, probe_accuracy=accuracy)
        for candidate, score, accuracy in zip(candidates, scores, accuracies, strict=True)
    ]


def test_correlations_are_kendall_tau_against_probe_accuracy():
    rows = rows_with([0.1, 0.5, 0.3, 0.9], [0.60, 0.70, 0.65, 0.90])
    found = ranking.correlations(rows)
    assert found["logme"]["tau"] == pytest.approx(1.0) and found["h_score"]["tau"] == pytest.approx(-1.0)
    assert found["logme"]["weighted_tau"] == pytest.approx(1.0) and found["logme"]["candidates"] == 4
    assert "leep" not in found  # no candidate has it
    rows[1].probe_accuracy, rows[2].probe_accuracy = 0.65, 0.70  # one discordant pair of six: tau = 4/6
    assert ranking.correlations(rows)["logme"]["tau"] == pytest.approx(4 / 6)
    rows[0].probe_accuracy = 0.0  # a probe at 0 % is a measurement, not a missing one
    assert ranking.correlations(rows)["logme"]["candidates"] == 4


def test_report_orders_by_the_score_and_suggests_the_best(tmp_path):
    rows = rows_with([0.1, 0.5, 0.3, 0.9], [0.60, 0.70, 0.65, 0.90])
    lines = ranking_report.table(rows).splitlines()
    assert lines[2].startswith("| 1 | lenet5@32/tap3 |") and lines[-1].startswith("| 4 | lenet5@32/tap0 |")
    assert "LEEP" not in lines[0] and "90.0" in lines[2]
    assert ranking_report.suggestion(rows).startswith("Start from lenet5@32/tap3")
    assert "| LogME | 4 | +1.000 |" in ranking_report.correlation_table(ranking.correlations(rows))
    assert ranking_report.costs(rows).startswith("Cost: 4 candidates, 1 forward passes over the scored images 1.0 s")
    rows[0].seconds.update(probe=0.1, validation_features=0.2)
    for row in rows[1:]:
        row.seconds.update(probe=0.1, validation_features=0.2)
    ranking_report.plot(rows, str(tmp_path / "chart.png"), "tiny")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_app_writes_the_ranking_and_refuses_bad_arguments(folder, tmp_path, capsys):
    app = load_app("rank_backbones")
    path = tmp_path / "lenet.weights.h5"
    backbones.build("lenet5", input_shape=(32, 32, 3)).save_weights(path)
    out = tmp_path / "out"
    arguments = ["--dataset", folder, "--candidates", "lenet5@32/relu1,relu2", "--weights", f"lenet5={path}"]
    assert app.main([*arguments, "--samples-per-class", "6", "--validation", "6", "--validate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Kendall tau" in printed and "Start from lenet5@32/" in printed
    assert {p.name for p in out.iterdir()} == {"ranking.md", "ranking.csv", "ranking.png"}
    assert app.main([*arguments, "--samples-per-class", "2", "--out", str(out)]) == 2
    assert "error: samples_per_class=2 is too few" in capsys.readouterr().err
    assert app.main(["--dataset", folder, "--candidates", "lenet5", "--weights", "lenet5"]) == 2
    assert "backbone=weights" in capsys.readouterr().err
