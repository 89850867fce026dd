"""Issue 2 acceptance: real ImageNet weights really load (minutes on a 2-core CPU; `pytest -m slow`)."""

import pytest

from keras_l2t.training import probe

PRETRAINED = [
    ("mobilenet_v2", "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5", 0.97),
    ("squeezenet1_1", "weights/squeezenet_v1.1_imagenet_notop.h5", 0.93),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "weights", "bar"), PRETRAINED)
def test_pretrained_features_beat_random_by_25_points(shared, backbone, weights, bar):
    roots = (str(shared / "data/cats_vs_dogs/train"), str(shared / "data/cats_vs_dogs/test"))
    pretrained = probe.linear_probe(backbone, str(shared / weights), *roots, image_size=224)["test_accuracy"]
    random = probe.linear_probe(backbone, None, *roots, image_size=224)["test_accuracy"]
    assert pretrained >= bar
    assert pretrained - random >= 0.25
