"""Keep, predict, export (issue 18): a model trained through the app classifies new photos, its TFLite twin agrees."""

from pathlib import Path

import numpy as np
import pytest
from conftest import linked_subset, load_app

from keras_l2t.running import inference


@pytest.fixture(scope="module")
def trained(shared, tmp_path_factory):
    """MobileNetV2, two-phase (frozen, then fine-tuned), on real cats-vs-dogs photos through the app."""
    root = tmp_path_factory.mktemp("cats")
    folder = linked_subset(shared / "data/cats_vs_dogs", root / "data", per_class=60)
    weights = str(shared / "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5")
    arguments = [
        "--dataset", folder, "--preset", "none", "--strategies", "feature_extraction", "--backbone", "mobilenet_v2",
        "--weights", weights, "--image-size", "128", "--epochs", "5", "--batch-size", "16", "--learning-rate", "0.003",
        "--fine-tune-epochs", "1", "--out", str(root / "out"), "--quiet", "--validation", "20",
    ]  # fmt: skip
    assert load_app("compare_strategies").main(arguments) == 0
    return root / "out"


def test_the_app_keeps_the_model_it_picks_with_what_it_needs(trained):
    (model_file,) = (trained / "models").glob("*.keras")
    model, metadata = inference.load_model(str(model_file))
    assert metadata["class_names"] == ["cat", "dog"] and metadata["image_size"] == 128
    assert metadata["network"] == "mobilenet_v2" and model.output.shape[-1] == 2
    assert "## Models kept" in (trained / "summary.md").read_text()


def test_predict_names_the_right_class_of_new_photos(trained, shared, tmp_path, capsys):
    photos = [str(shared / "data/photos/cat.png"), str(shared / "data/photos/dog.png")]
    assert load_app("predict").main(["--model", str(trained), *photos, "--top-k", "2", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "cat.png  cat" in printed and "dog.png  dog" in printed
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,class_1,probability_1,class_2,probability_2"
    assert [row.split(",")[1] for row in rows[1:]] == ["cat", "dog"]
    assert float(rows[1].split(",")[2]) > 0.5 and (tmp_path / "contact_sheet.png").stat().st_size > 20_000


@pytest.mark.slow  # about 2 minutes on a 2-core CPU (TFLite conversion, 1,000 photos)
def test_the_tflite_export_agrees_with_the_keras_model(trained, shared, tmp_path):
    model_file = inference.resolve_model(str(trained))
    tflite = inference.export_file(model_file, str(tmp_path / "model.tflite"))
    photos = sorted(str(path) for path in (shared / "data/cats_vs_dogs/test").rglob("*.jpg"))
    assert len(photos) == 1000
    keras_rows = inference.predict(model_file, photos, top_k=2)
    tflite_rows = inference.predict(tflite, photos, top_k=2)
    assert [row["top"][0][0] for row in keras_rows] == [row["top"][0][0] for row in tflite_rows]
    differences = [abs(a["top"][0][1] - b["top"][0][1]) for a, b in zip(keras_rows, tflite_rows, strict=True)]
    assert max(differences) < 1e-3
    int8 = inference.export_file(
        model_file, str(tmp_path / "int8.tflite"), int8=True, calibration=str(shared / "data/cats_vs_dogs/train")
    )
    assert Path(int8).stat().st_size < 0.4 * Path(tflite).stat().st_size  # int8 weights: about a quarter
    truth = [Path(photo).parent.name for photo in photos[::10]]
    accuracy = {
        name: np.mean([row["top"][0][0] == label for row, label in zip(rows, truth, strict=True)])
        for name, rows in (("keras", keras_rows[::10]), ("int8", inference.predict(int8, photos[::10])))
    }
    assert accuracy["int8"] > max(0.6, accuracy["keras"] - 0.15), accuracy  # quantised, not broken


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a model file nor an output folder"):
        inference.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="holds no kept models"):
        inference.resolve_model(str(tmp_path))
    (tmp_path / "plain.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="carries no keras_l2t metadata"):
        inference.read_metadata(str(tmp_path / "plain.keras"))
