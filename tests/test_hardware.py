"""Devices and precision (issue 15): MirroredStrategy equals one device, mixed precision trains and stays sound."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.core import hardware, keras_internals
from keras_l2t.datasets import data
from keras_l2t.networks import backbones
from keras_l2t.running import experiment
from keras_l2t.running.config import RunConfig
from keras_l2t.training import strategies

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4  # the bar for a 2-replica step against the 1-device step


def test_devices_and_precision_are_checked():
    assert hardware.parse_devices("all") == "all" and hardware.parse_devices("3") == 3
    for bad in ("0", "-1", "two", 1.5, True):
        with pytest.raises(ValueError, match="--devices"):
            hardware.parse_devices(bad)
    assert hardware.distribution(1) is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="needs 64 devices, but TensorFlow sees"):
        hardware.distribution(64)
    with pytest.raises(ValueError, match="Unknown mixed precision 'half'"):
        with hardware.precision("half"):
            pass
    with pytest.raises(ValueError, match="mixed_precision"):
        RunConfig("scratch", mixed_precision="float8")
    assert RunConfig("scratch", devices=2).key == RunConfig("scratch").key  # how a run trains, not what it is
    assert RunConfig("scratch", mixed_precision="bfloat16").key != RunConfig("scratch").key


def test_precision_sets_the_policy_for_a_block_only():
    with hardware.precision("bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert keras.config.dtype_policy().name == "float32" and layer.compute_dtype == "bfloat16"
    with hardware.computing_in(keras.Sequential([keras.Input((3,)), layer]), "float32"):
        assert layer.compute_dtype == "float32"
    assert layer.compute_dtype == "bfloat16"


def tiny_splits(backbone: str):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype="uint8")
    labels = np.arange(48) % 3
    images[labels == 1, :16] = 255
    return data.load((images, labels), backbone=backbone, validation=0.2, test_fraction=0.2, batch_size=16)


SLOW = pytest.mark.slow  # an L2T run: about a minute


@pytest.mark.parametrize(
    ("strategy", "mixed"),
    [("full_fine_tune", "bfloat16"), ("full_fine_tune", "float16")]
    + [pytest.param("l2t_ww", mixed, marks=SLOW) for mixed in hardware.PRECISIONS],
)
def test_a_run_trains_under_mixed_precision_with_finite_losses(strategy, mixed, tmp_path, monkeypatch):
    built, real_build = [], experiment.build_model

    def recording_build(*args):
        built.append(real_build(*args))
        return built[-1]

    monkeypatch.setattr(experiment, "build_model", recording_build)
    options = {"source_weights": None} if strategy == "l2t_ww" else {"backbone": "lenet5", "weights": None}
    config = RunConfig(strategy, dataset="tiny", epochs=2, mixed_precision=mixed, out=str(tmp_path),
                       verbose=0, keep_model=False, **options)  # fmt: skip
    result = experiment.run(config, tiny_splits(config.trained_network))
    network = built[0].target if strategy == "l2t_ww" else built[0]
    convolutions = [layer for layer in keras_internals.all_layers(network) if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == mixed for layer in convolutions)  # it really was mixed
    scaled = isinstance(built[0].optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (mixed == "float16")  # float16 needs loss scaling, bfloat16 has float32's range
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    history = experiment._read_history(config.paths.history())
    assert len(history["loss"]) == 2 and all(math.isfinite(loss) for loss in history["loss"])
    assert result["diverged_epoch"] is None and 0 <= result["test_accuracy"] <= 1


def cifar_batch(shared: Path):
    """16 real CIFAR-10 training images (two of each of the first eight classes), preprocessed for vgg9."""
    from PIL import Image

    root = shared / "data" / "cifar10" / "train"
    classes = sorted(os.listdir(root))[:8]
    images = [np.asarray(Image.open(root / name / f"{index:04d}.jpg").convert("RGB"), "float32")
              for name in classes for index in range(2)]  # fmt: skip
    labels = np.repeat(np.arange(8), 2)
    return np.asarray(backbones.spec("vgg9").preprocess(np.stack(images))), labels


def meta_gradient(shared: Path, mixed: str | None, images, labels) -> np.ndarray:
    """The L2T-ww meta-gradient (vgg9 target, the paper's resnet32 source, 15 pairs) on a batch, at the seed-0 init."""
    with hardware.precision(mixed):
        keras.utils.set_random_seed(0)
        path = str(shared / "weights" / "resnet32_tinyimagenet_l2tww.pth.tar")
        model = strategies.build("l2t_ww", num_classes=10, target="vgg9", input_shape=(32, 32, 3), source_weights=path)
        assert model.target.get_layer("conv1").compute_dtype == ("bfloat16" if mixed else "float32")
        inputs, targets = tf.constant(images), tf.constant(labels)
        _, gradients = model.meta_gradients(inputs, targets, model.source_maps(inputs))
    return np.concatenate([np.ravel(np.asarray(gradient, "float64")) for gradient in gradients])


def test_the_meta_gradient_under_mixed_bfloat16_matches_float32(shared):
    images, labels = cifar_batch(shared)
    single, mixed = (meta_gradient(shared, policy, images, labels) for policy in (None, "bfloat16"))
    cosine = single @ mixed / (np.linalg.norm(single) * np.linalg.norm(mixed))
    assert np.linalg.norm(single) > 0 and cosine > 0.99


def distributed_differences(shared: Path, strategies_: list[str], pairs: str | None = None) -> dict:
    """Run tests/distributed_step.py (its own process: two logical CPU devices) and read its JSON lines."""
    command = [sys.executable, str(HERE / "distributed_step.py"), str(shared)]
    command += ["--pairs", pairs] if pairs else []
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    finished = subprocess.run(command + strategies_, capture_output=True, text=True, env=environment, timeout=3000)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    return {line["strategy"]: line for line in lines}


ALL_STEPPED = ["full_fine_tune", "scratch", "ufm", "l2t_ww", "l2t_www"]


@pytest.mark.slow  # 2-4 minutes (a float64 second-order step traced twice in a subprocess)
def test_a_two_replica_step_equals_the_one_device_step_on_one_pair(shared):
    """Every mechanism (replica-scaled losses, all-reduced look-ahead, global-batch BN moments) on one pair."""
    results = distributed_differences(shared, ["full_fine_tune", "l2t_www"], pairs="2:4")
    assert set(results) == {"full_fine_tune", "l2t_www"}
    for result in results.values():
        assert result["moved"] > 0 and result["relative_difference"] < TOLERANCE, result


@pytest.mark.slow
def test_a_two_replica_step_equals_the_one_device_step_for_every_strategy(shared):
    """The issue's acceptance: scratch, UFM, L2T-ww and L2T-www (all 15 pairs) and a classic strategy."""
    results = distributed_differences(shared, ALL_STEPPED)
    assert set(results) == set(ALL_STEPPED)
    for result in results.values():
        assert result["moved"] > 0 and result["relative_difference"] < TOLERANCE, result


@pytest.mark.slow  # 5-12 minutes (four 3-epoch runs of vgg9 with the resnet32 source)
def test_a_run_with_two_devices_trains_as_one_device(shared):
    """`RunConfig.devices=2` builds under MirroredStrategy and its epoch losses are those of `devices=1`.

    Matching methods (no dropout: a classic head's dropout draws differ per replica, so classic runs differ).
    """
    command = [sys.executable, str(HERE / "distributed_step.py"), str(shared), "--run", "l2t_ww", "ufm"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=3000,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    assert [result["strategy"] for result in results] == ["l2t_ww", "ufm"]
    for result in results:
        assert result["replicas"] == [1, 2] and result["loss_difference"] < TOLERANCE, result
