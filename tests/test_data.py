import os

import numpy as np
import pytest
from PIL import Image

from keras_l2t.datasets import augment, data, sources, splits
from keras_l2t.networks import backbones


def make_arrays(per_class=(30, 30, 30), size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(count, label) for label, count in enumerate(per_class)])
    images = rng.integers(0, 256, (len(labels), size, size, 3), dtype="uint8")
    return images, labels


def write_folder(root, classes=("cat", "dog"), per_class=4, size=12, sizes=None):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            side = sizes[index % len(sizes)] if sizes else size
            pixels = np.full((side, side, 3), 40 * label + index, "uint8")
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")


def test_samples_per_class_is_balanced_seeded_and_shared_across_calls():
    arrays = make_arrays()
    first = data.load(arrays, samples_per_class=5, validation=0.2, seed=3, batch_size=4)
    again = data.load(arrays, samples_per_class=5, validation=0.2, seed=3, batch_size=4)
    other = data.load(arrays, samples_per_class=5, validation=0.2, seed=4, batch_size=4)
    assert first.counts["train_per_class"] == [5, 5, 5]
    # test: 20 % of each class of 30 (6); validation: 20 % of the 24 left per class, rounded (5)
    assert first.counts["test"] == 18 and first.counts["validation"] == 15
    np.testing.assert_array_equal(first.train_indices, again.train_indices)
    assert not np.array_equal(first.train_indices, other.train_indices)
    labels = np.concatenate([batch[1].numpy() for batch in first.train])
    assert sorted(np.bincount(labels).tolist()) == [5, 5, 5]


def test_validation_and_test_are_disjoint_from_the_training_subset():
    images, labels = make_arrays()
    images[:, 0, 0, 0] = np.arange(len(labels))  # identify each image by one pixel
    splits = data.load((images, labels), validation=0.2, test_fraction=0.2, seed=0, augment="none", batch_size=8)
    seen = {}
    for split in ("train", "validation", "test"):
        seen[split] = {int(x) for batch in getattr(splits, split) for x in np.round(batch[0][:, 0, 0, 0] * 255)}
    assert len(seen["train"]) + len(seen["validation"]) + len(seen["test"]) == len(labels)
    assert not (seen["train"] & seen["validation"]) and not (seen["train"] & seen["test"])


def test_imbalanced_protocol_keeps_a_tenth_of_the_last_class():
    arrays = make_arrays((120, 120, 120))
    loaded = data.load(arrays, samples_per_class=100, imbalanced=True, validation=0, test_fraction=0)
    assert loaded.counts["train_per_class"] == [100, 100, 10]
    assert splits.imbalanced_counts(100, 10) == [100] * 9 + [10]


def test_asking_for_more_images_than_a_class_holds_names_the_class():
    arrays = make_arrays((30, 30, 4))
    with pytest.raises(ValueError, match="Class '2' holds 4"):
        data.load(arrays, samples_per_class=10, validation=0, test_fraction=0)


def test_validation_count_like_cifar10_45000_5000():
    arrays = make_arrays((50, 50, 50))
    splits = data.load({"train": arrays, "test": make_arrays((5, 5, 5))}, validation=15)
    assert (splits.counts["train"], splits.counts["validation"], splits.counts["test"]) == (135, 15, 15)


def test_batches_are_resized_and_preprocessed_for_the_backbone():
    splits = data.load(make_arrays(size=32), backbone="resnet32", validation=0.1, batch_size=16, seed=0)
    images, labels = next(iter(splits.test))
    assert images.shape == (splits.counts["test"], 32, 32, 3) and images.dtype == "float32" and labels.dtype == "int64"
    assert next(iter(splits.train))[0].shape[0] == 16  # training batches keep batch_size, evaluation ones are larger
    assert [data.evaluation_batch_size(16, size) for size in (32, 64, 160, 224)] == [512, 128, 20, 16]
    assert float(images.numpy().min()) < -1.5  # ImageNet mean/std normalisation, not [0, 1]
    resized = data.load(make_arrays(size=8), image_size=20, preprocess=lambda x: x, batch_size=4)
    batch = next(iter(resized.train))[0]
    assert batch.shape == (4, 20, 20, 3) and float(batch.numpy().max()) <= 255.0
    assert resized.input_shape == (20, 20, 3) and resized.num_classes == 3


@pytest.mark.parametrize("kind", ["crop_flip", "flip_rotate", "crop", "flip", "rotation", "crop,flip,rotation"])
def test_augmentation_changes_training_images_only(kind):
    images = np.tile(np.arange(16, dtype="uint8")[None, :, None, None] * 15, (24, 1, 16, 3))
    arrays = (images.transpose(0, 2, 1, 3).copy(), np.arange(24) % 2)
    splits = data.load(arrays, augment=kind, preprocess=lambda x: x, validation=0, test_fraction=0, batch_size=24)
    augmented = next(iter(splits.train))[0].numpy()
    assert augmented.shape == images.shape
    assert np.abs(augmented - arrays[0][0]).max(axis=(1, 2, 3)).max() > 0
    plain = data.load(arrays, augment="none", preprocess=lambda x: x, validation=0, test_fraction=0, batch_size=24)
    np.testing.assert_array_equal(np.sort(next(iter(plain.train))[0].numpy(), axis=0), np.sort(arrays[0], axis=0))


def test_unknown_augmentation_lists_the_choices():
    with pytest.raises(ValueError, match="crop, flip, rotation"):
        data.load(make_arrays(), augment="mixup")


def test_the_default_augmentation_never_mirrors():
    assert augment.augment_transforms("auto", 32) == ("crop",) and augment.augment_transforms("auto", 160) == (
        "rotation",
    )
    assert augment.augment_transforms("flip,crop", 32) == ("crop", "flip")  # applied in a fixed order
    # a left-right gradient: a mirrored image would run right to left, whatever the seed
    images = np.tile(np.arange(32, dtype="uint8")[None, None, :, None] * 8, (64, 32, 1, 3))
    splits = data.load((images, np.arange(64) % 2), preprocess=lambda x: x, validation=0, test_fraction=0,
                       batch_size=64)  # fmt: skip
    augmented = next(iter(splits.train))[0].numpy()[:, 4:-4, 4:-4, 0]  # inside the crop's padding
    assert (np.diff(augmented, axis=-1) >= 0).all()
    mirrored = data.load((images, np.arange(64) % 2), preprocess=lambda x: x, validation=0, test_fraction=0,
                         batch_size=64, augment="flip")  # fmt: skip
    assert (np.diff(next(iter(mirrored.train))[0].numpy()[..., 0], axis=-1) < 0).any()


def test_image_folder_with_splits(tmp_path):
    write_folder(tmp_path / "train", per_class=6)
    write_folder(tmp_path / "test", per_class=2)
    splits = data.load(tmp_path, validation=2, batch_size=4, preprocess=lambda x: x)
    assert splits.class_names == ["cat", "dog"]
    assert (splits.counts["train"], splits.counts["validation"], splits.counts["test"]) == (10, 2, 4)
    assert splits.image_size == 12


def test_single_image_folder_gets_validation_and_test_carved(tmp_path):
    write_folder(tmp_path, per_class=10)
    splits = data.load(str(tmp_path), validation=0.2, test_fraction=0.1)
    assert (splits.counts["train"], splits.counts["validation"], splits.counts["test"]) == (14, 4, 2)


def test_mixed_image_sizes_need_an_image_size(tmp_path):
    write_folder(tmp_path / "train", sizes=(10, 14))
    with pytest.raises(ValueError, match="image_size"):
        data.load(tmp_path)
    splits = data.load(tmp_path, image_size=16, validation=0, test_fraction=0)
    assert next(iter(splits.train))[0].shape[1:] == (16, 16, 3)


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(tmp_path / "missing")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.load(tmp_path / "empty")
    (tmp_path / "noimages" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        data.load(tmp_path / "noimages")
    write_folder(tmp_path / "differ" / "train", classes=("cat", "dog"))
    write_folder(tmp_path / "differ" / "test", classes=("cat", "cow"))
    with pytest.raises(ValueError, match="differ from those of the train split"):
        data.load(tmp_path / "differ")
    write_folder(tmp_path / "broken" / "train")
    (tmp_path / "broken" / "train" / "dog" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        data.load(tmp_path / "broken")


def test_array_errors():
    with pytest.raises(ValueError, match="shape"):
        data.load((np.zeros((4, 8, 8, 2)), np.zeros(4)))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        data.load((np.zeros((4, 8, 8, 3)), np.zeros(3)))
    grey = sources.from_arrays((np.zeros((4, 8, 8)), np.arange(4)))
    assert grey.splits["train"][0].shape == (4, 8, 8, 3)


def test_tfds_by_name_through_tfds_load():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        splits = data.load("cifar10", backbone="vgg9", samples_per_class=1, validation=0, batch_size=8)
    assert splits.num_classes == 10 and splits.counts["test"] == 40
    assert next(iter(splits.test))[0].shape == (40, 32, 32, 3)  # evaluation batches: up to 512 images at 32 px


def test_tfds_errors_name_data_dir_and_tfds_data_dir(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'"):
        data.load("cifar11")
    with pytest.raises(FileNotFoundError, match="TFDS_DATA_DIR"):
        data.load("cifar10", data_dir=str(tmp_path))


def test_real_cats_vs_dogs_folder_for_mobilenet(shared):
    splits = data.load(
        shared / "data/cats_vs_dogs", backbone="mobilenet_v2", image_size=96, samples_per_class=4, validation=10
    )
    assert splits.class_names == ["cat", "dog"] and splits.counts["train_per_class"] == [4, 4]
    images = next(iter(splits.test))[0].numpy()
    assert images.shape[1:] == (96, 96, 3) and -1.0 <= images.min() and images.max() <= 1.0
    assert backbones.spec("mobilenet_v2").default_size == 224


def test_rotation_about_the_centre():
    import tensorflow as tf

    from keras_l2t.datasets.augment import _rotation

    image = np.random.default_rng(0).integers(0, 256, (9, 9, 3)).astype("uint8")
    np.testing.assert_array_equal(_rotation(tf.constant(image), tf.constant(0.0)).numpy(), image)
    quarter = _rotation(tf.constant(image), tf.constant(np.pi / 2, tf.float32)).numpy()
    assert any(np.array_equal(quarter, np.rot90(image, turns)) for turns in (1, 3))


def test_validation_can_be_carved_in_whole_groups(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        for track in range(6):
            for frame in range(5):  # five near-identical frames of one object
                pixels = rng.integers(0, 255, (8, 8, 3), dtype="uint8")
                Image.fromarray(pixels).save(tmp_path / name / f"{track:05d}_{frame:05d}.png")
    grouped = data.load(str(tmp_path), validation=10, test_fraction=0, validation_groups="^([0-9]+)_", batch_size=60)
    source = data.read(str(tmp_path))
    tracks = np.array([f"{path.split('/')[-2]}/{path.split('/')[-1][:5]}" for path in source.files["train"]])
    train_tracks = set(tracks[grouped.train_indices])
    held_out = set(tracks) - train_tracks
    assert grouped.counts["validation"] == 10 and len(held_out) == 2  # one whole track per class
    assert grouped.counts["train"] == 50  # no frame of a validation track is trained on
    with pytest.raises(ValueError, match="does not match the file name"):
        data.load(str(tmp_path), validation=10, test_fraction=0, validation_groups="^x")


def test_decoded_folders_are_cached_across_processes(tmp_path, monkeypatch):
    from keras_l2t.datasets import folder_cache

    monkeypatch.setenv("KERAS_L2T_CACHE", str(tmp_path / "cache"))
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(np.full((5 + index, 6, 3), index, "uint8")).save(paths[-1])
    decoded = []

    def decode():
        decoded.append(1)
        return sources.read_images(paths, 4)

    first = folder_cache.cached(paths, 4, decode)
    again = folder_cache.cached(paths, 4, decode)  # a new process finds the same entry
    np.testing.assert_array_equal(first, again)
    assert len(decoded) == 1 and first.shape == (3, 4, 4, 3)
    os.utime(paths[0], ns=(1, 1))  # a changed file: a new entry
    folder_cache.cached(paths, 4, decode)
    folder_cache.cached(paths, 8, decode)  # another size: another entry
    assert len(decoded) == 3 and len(list((tmp_path / "cache").glob("*.npy"))) == 3
    monkeypatch.setenv("KERAS_L2T_CACHE", "off")
    folder_cache.cached(paths, 4, decode)
    assert len(decoded) == 4


def test_mixed_sizes_are_resized_when_read_without_tensorflow_ops(tmp_path):
    Image.fromarray(np.full((40, 60, 3), 200, "uint8")).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((9, 7, 3), 100, "uint8")).save(tmp_path / "b.png")
    images = sources.read_images([str(tmp_path / "a.jpg"), str(tmp_path / "b.png")], 8)
    assert images.shape == (2, 8, 8, 3) and abs(int(images[0].mean()) - 200) <= 2 and int(images[1].mean()) == 100
