"""Where images come from: image folders, TFDS datasets and in-memory arrays, read into uint8 arrays.

Every reader returns a `Source`: the splits it found (each images uint8 (N, H, W, 3) and labels int64 (N,))
and the class names. Images are decoded once; folder reads are kept in memory for the rest of the process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from keras_l2t.datasets import folder_cache, image_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass
class Source:
    """Decoded images of a dataset, by split.

    Args:
        splits: split name -> (images uint8 (N, H, W, 3), labels int64 (N,)).
        class_names: the class of each label value.
        name: where it came from (for messages and results).
        files: split name -> the file of each image, for sources read from folders (None otherwise).

    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: list[str]
    name: str = ""
    files: dict[str, list[str]] | None = None


def is_image_file(path: Path) -> bool:
    """An image file by its suffix, not hidden.

    Hidden files (macOS "._name.jpg" resource forks, ".DS_Store") are skipped, as image-folder readers usually do.
    """
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_image_folder(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """List the images of a `<root>/<class>/*` folder.

    Args:
        root: a folder with one sub-folder per class.

    Returns:
        (file paths, integer labels, class names sorted alphabetically).

    Raises:
        FileNotFoundError: the folder does not exist. ValueError: no class folders, or a class without images.

    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist; expected <root>/<class>/<image> files.")
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(f"Image folder {str(root)!r} has no class sub-folders; expected <root>/<class>/<image> files.")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(str(f) for f in (root / name).iterdir() if is_image_file(f))
        if not files:
            raise ValueError(f"Class folder {str(root / name)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, "int64"), class_names


def read_image(path: str, image_size: int | None = None) -> np.ndarray:
    """Read one image as RGB uint8, optionally resized (bilinear, antialiased) to a square.

    16-bit images keep their tones (scaled to 8-bit, `image_files.to_rgb`); an image of more pixels than
    `image_files.pixel_limit()` is refused before it is decoded.

    Args:
        path: the image file.
        image_size: the output height and width; None keeps the image's own size.

    Returns:
        An array of shape (height, width, 3), dtype uint8.

    Raises:
        ValueError: naming the file when it cannot be decoded or is too large.

    """
    try:
        with image_files.open_image(path) as image:
            if image_size is not None and image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))  # decode at 1/2, 1/4 or 1/8 scale, still >= size
            image = image_files.to_rgb(image, path)
            if image_size is not None and image.size != (image_size, image_size):
                # Pillow widens the bilinear filter when it shrinks, so this is antialiased, like
                # tf.image.resize(antialias=True), without a TensorFlow op per image
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {path!r}: {error}") from error


def read_images(paths: list[str], image_size: int | None = None) -> np.ndarray:
    """Read many images (see `read_image`) in parallel threads into one uint8 array (N, size, size, 3).

    Args:
        paths: image files.
        image_size: common output size; required unless every image has the same size.

    Returns:
        The stacked images.

    Raises:
        ValueError: an unreadable file (named), images of different sizes without `image_size`, or an
        `image_size` whose images exceed the pixel limit or the memory available.

    """
    if image_size is not None:
        image_files.check_pixels(image_size, image_size, f"image_size {image_size}")
        image_files.check_memory(
            2 * len(paths) * image_size * image_size * 3,  # the decoded images, then their stacked copy
            f"Decoding {len(paths):,} images at {image_size} x {image_size}",
            "use a smaller image size or fewer images",
        )
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        images = list(pool.map(functools.partial(read_image, image_size=image_size), paths, chunksize=64))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"Images have different sizes ({sorted(shapes)[:3]}...); pass image_size to resize them to one size."
        )
    return np.stack(images) if images else np.zeros((0, image_size or 0, image_size or 0, 3), "uint8")


def load_image_folder(
    root: str | os.PathLike, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a whole `<root>/<class>/*` folder into memory.

    Args:
        root: the folder.
        image_size: output height and width (None keeps the images' own, equal sizes).

    Returns:
        (images uint8 (N, size, size, 3), labels int64 (N,), class names).

    """
    paths, labels, class_names = list_image_folder(root)
    return read_images(paths, image_size), labels, class_names


def _same_size(paths: list[str]) -> bool:
    sizes = set()
    for path in paths:
        with image_files.open_image(path) as image:
            sizes.add(image.size)
        if len(sizes) > 1:
            return False
    return True


@functools.lru_cache(maxsize=8)
def _list_folder(root: str, modified: float) -> tuple[list[str], np.ndarray, tuple]:
    paths, labels, class_names = list_image_folder(root)
    return paths, labels, tuple(class_names)


@functools.lru_cache(maxsize=4)
def _decode_folder(root: str, image_size: int | None, modified: float, use_cache: bool, key: str) -> np.ndarray:
    paths = _list_folder(root, modified)[0]

    def decode() -> np.ndarray:
        same = _same_size(paths)
        if not same and image_size is None:
            raise ValueError(f"Images under {root!r} have different sizes; pass image_size to resize them when read.")
        return read_images(paths, None if same else image_size)

    return folder_cache.cached(paths, image_size, decode, key) if use_cache else decode()


def _read_folder_split(root: str, image_size: int | None, modified: float, use_cache: bool):
    paths, labels, class_names = _list_folder(root, modified)
    key = folder_cache.fingerprint(paths, image_size)  # each file as it is now: one rewritten in place is read again
    return _decode_folder(root, image_size, modified, use_cache, key), labels, class_names


def read_folder(root: str | os.PathLike, image_size: int | None = None, cache: bool = True) -> Source:
    """Read an image folder: `<root>/<split>/<class>/*` (splits train, validation, test) or `<root>/<class>/*`.

    Images that all share one size are kept at it (e.g. CIFAR's 32x32, resized later in the pipeline);
    otherwise they are resized to `image_size` when decoded. Reads are cached for the process while every
    file keeps its name, size, modification and change times (`folder_cache.fingerprint`).

    Args:
        root: the folder.
        image_size: the size to decode images of mixed sizes to.
        cache: keep the decoded images on disk for the next process (`folder_cache`; also off with
            `KERAS_L2T_CACHE=off`).

    Returns:
        A `Source`; a folder without split sub-folders becomes a single "train" split.

    Raises:
        FileNotFoundError: missing folder. ValueError: empty folder, unreadable image (named), or class
        sets that differ between splits.

    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Dataset folder {str(root)!r} does not exist. Give a TFDS name (e.g. 'cifar10') or a folder laid out "
            "as <root>/<split>/<class>/<image> or <root>/<class>/<image>."
        )
    split_roots = {split: root / split for split in SPLIT_NAMES if (root / split).is_dir()}
    if "train" not in split_roots:
        split_roots = {"train": root}
    splits, class_names, files = {}, None, {}
    for split, split_root in split_roots.items():
        files[split] = list(_list_folder(str(split_root), split_root.stat().st_mtime)[0])
        images, labels, names = _read_folder_split(str(split_root), image_size, split_root.stat().st_mtime, cache)
        if class_names is not None and list(names) != class_names:
            raise ValueError(
                f"The class folders of {str(split_root)!r} {list(names)} differ from those of the train split "
                f"{class_names}; every split needs the same class sub-folders."
            )
        class_names = list(names)
        splits[split] = (images, labels)
    return Source(splits, class_names, str(root), files)


def from_arrays(arrays, class_names: list[str] | None = None) -> Source:
    """Wrap in-memory images.

    Args:
        arrays: (images, labels) for a training set only, or a dict split name -> (images, labels). Images are
            uint8 or float in [0, 255], shape (N, H, W, 3) (grey (N, H, W) or (N, H, W, 1) is repeated to RGB).
        class_names: optional names; default "0", "1", ...

    Returns:
        A `Source`.

    Raises:
        ValueError: wrong shapes, mismatched lengths, or an unknown split name.

    """
    if not isinstance(arrays, dict):
        arrays = {"train": arrays}
    splits = {}
    for split, pair in arrays.items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {split!r}; use {', '.join(SPLIT_NAMES)}.")
        images, labels = np.asarray(pair[0]), np.asarray(pair[1]).reshape(-1).astype("int64")
        if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 1):
            images = np.repeat(images.reshape(images.shape[:3] + (1,)), 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{split} images must have shape (N, height, width, 3), got {images.shape}.")
        if len(images) != len(labels):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels.")
        splits[split] = (np.clip(images, 0, 255).astype("uint8"), labels)
    num_classes = int(max(labels.max(initial=-1) for _, labels in splits.values())) + 1
    return Source(splits, list(class_names) if class_names else [str(c) for c in range(num_classes)], "arrays")


def _tfds_split_to_arrays(dataset, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        if image_size is not None and image.shape[:2] != (image_size, image_size):
            image = np.clip(np.round(tf.image.resize(image, (image_size, image_size), antialias=True)), 0, 255)
        images.append(np.asarray(image, "uint8"))
        labels.append(label)
    if len({image.shape for image in images}) > 1:
        raise ValueError("This TFDS dataset has images of different sizes; pass image_size to resize them.")
    return np.stack(images), np.asarray(labels, "int64")


DOWNLOAD_RETRIES = 3  # TFDS retries a failed request 10 times with doubling waits: 205 s before an offline error


def _download_and_prepare(builder) -> None:
    """`builder.download_and_prepare()` with fewer retries (TFDS' own module constant, restored afterwards)."""
    from tensorflow_datasets.core.download import downloader

    retries = getattr(downloader, "MAX_RETRIES", None)
    downloader.MAX_RETRIES = DOWNLOAD_RETRIES
    try:
        builder.download_and_prepare()
    finally:
        downloader.MAX_RETRIES = retries


def read_tfds(name: str, *, data_dir: str | None = None, download: bool = False, image_size: int | None = None):
    """Read a TFDS image classification dataset (every split it has) with `tfds.load`.

    Args:
        name: a TFDS name, e.g. "cifar10", "cifar100", "stl10", "cats_vs_dogs".
        data_dir: where TFDS keeps prepared datasets (default: TFDS_DATA_DIR or ~/tensorflow_datasets).
        download: let TFDS download and prepare it when it is missing.
        image_size: size to resize images of mixed sizes to.

    Returns:
        A `Source` with the splits train / validation / test that the dataset has.

    Raises:
        ValueError: an unknown name (lists close ones). FileNotFoundError: not prepared locally and
        `download` off (or offline), saying how to point `data_dir` / TFDS_DATA_DIR at a copy.

    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"Unknown dataset {name!r}: not a folder and not a TFDS name. {str(error)[:300]}") from error
    try:
        if download:
            _download_and_prepare(builder)
    except OSError as error:  # requests' ConnectionError is one: offline, or the server is unreachable
        raise FileNotFoundError(
            f"TFDS dataset {name!r} could not be downloaded ({type(error).__name__}: {str(error)[:200]}). Are you "
            "offline? Prepare it on a machine that is online and point data_dir (--data-dir) or TFDS_DATA_DIR at "
            "that folder, or give an image folder instead."
        ) from error
    except ImportError as error:  # TFDS imports what a dataset's download needs only when it downloads
        raise ImportError(
            f"Downloading TFDS dataset {name!r} needs a package that is not installed: {error}. Install it "
            f"(pip install {getattr(error, 'name', None) or 'the package named above'}) and run again."
        ) from error
    try:
        splits = [split for split in SPLIT_NAMES if split in builder.info.splits] or ["train", "test"]
        loaded = tfds.load(name, split=splits, data_dir=data_dir, download=False, as_supervised=True)
    except Exception as error:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not available here ({type(error).__name__}: {str(error)[:200]}). Pass "
            "download=True (--download) when online, or point data_dir (--data-dir) or the TFDS_DATA_DIR "
            "environment variable at a folder where it is already prepared, or give an image folder instead."
        ) from error
    arrays = {split: _tfds_split_to_arrays(dataset, image_size) for split, dataset in zip(splits, loaded, strict=True)}
    label_feature = builder.info.features["label"]
    return Source(arrays, list(label_feature.names), name)
