"""Images read with their real bit depth and size limits, and a decoded-image cache that is verified and bounded."""

import errno
import os
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import tiny_image_folder
from PIL import Image

from keras_l2t.datasets import data, folder_cache, image_files, sources


def write_png(path, width: int, height: int, bit_depth: int, color_type: int, pixels: bytes = b"") -> str:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header whose pixels were never encoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)))
        file.write(chunk(b"IEND", b""))
    return str(path)


def sixteen_bit_rows(values: np.ndarray) -> bytes:
    """PNG scanlines (filter byte 0) of big-endian 16-bit samples, values of shape (height, width[, channels])."""
    rows = values.reshape(values.shape[0], -1).astype(">u2")
    return b"".join(b"\0" + row.tobytes() for row in rows)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own."""
    monkeypatch.setenv(folder_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.delenv(folder_cache.SIZE_VARIABLE, raising=False)
    return tmp_path / "cache"


def test_sixteen_bit_pngs_keep_their_tones_in_folders_and_for_predict(tmp_path, cache):
    ramp = np.linspace(0, 36_000, 32 * 32).reshape(32, 32)  # a dark photo: mean 18,000 of 65,535 (70 of 255)
    for name in ("dark", "light"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(ramp.astype("uint16")).save(tmp_path / "folder" / name / f"{index}.png")
    grey = sources.read_images([str(tmp_path / "folder" / "dark" / "0.png")], 16)  # predict's reader
    assert abs(float(grey.mean()) - 18_000 / 257) < 1.5
    folder = sources.read_folder(tmp_path / "folder")  # a training folder (through the disk cache)
    assert abs(float(folder.splits["train"][0].mean()) - 18_000 / 257) < 1
    np.testing.assert_array_equal(folder.splits["train"][0][0, 0, 0], [0, 0, 0])
    colour = np.stack([ramp, ramp / 2, 65_535 - ramp], axis=-1).astype("uint16")  # 16-bit RGB: its high byte
    path = write_png(tmp_path / "rgb.png", 32, 32, 16, 2, sixteen_bit_rows(colour))
    np.testing.assert_allclose(sources.read_image(path).astype(float), colour / 257, atol=1)
    Image.fromarray(ramp.astype("int32")).save(tmp_path / "wide.tif")  # 32-bit grey: no one scale, refused
    os.rename(tmp_path / "wide.tif", tmp_path / "wide.png")
    with pytest.raises(ValueError, match="wide.png.*32-bit integer"):
        sources.read_image(str(tmp_path / "wide.png"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_the_pixel_limit_are_refused_by_name_before_decoding(tmp_path, cache, monkeypatch):
    huge = write_png(tmp_path / "huge.png", 20_000, 20_000, 8, 0)  # header only: decoding it needs 1.1 GiB as RGB
    with pytest.raises(ValueError, match=r"huge\.png.* has 400,000,000 pixels, more than the limit of 89,478,485"):
        sources.read_images([huge], 224)  # predict.py's reader
    folder = tiny_image_folder(tmp_path / "folder", train=2, test=1)
    os.replace(huge, os.path.join(folder, "train", "ant", "0.png"))
    with pytest.raises(ValueError, match=r"0\.png.*more than the limit of 89,478,485"):
        sources.read_folder(folder, 32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # between Pillow's limit and twice it, Pillow only warns
    with pytest.raises(ValueError, match=r"1\.png.* 32 x 32 = 1,024 pixels"):
        sources.read_image(os.path.join(folder, "train", "ant", "1.png"))


def test_image_size_is_checked_against_the_pixel_limit_and_the_memory_before_allocating(monkeypatch):
    images = np.zeros((20, 8, 8, 3), "uint8")
    labels = np.arange(20) % 2
    with pytest.raises(ValueError, match="image_size 10000 is 10000 x 10000 = 100,000,000 pixels"):
        data.load((images, labels), image_size=10_000)
    monkeypatch.setattr(image_files, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match=r"A batch of 512 images at 32 x 32 \(float32\) needs 0.0 GiB"):
        data.load((images, labels), image_size=32, test_fraction=0)  # 6 MiB of float32 batch for 1 MiB
    with pytest.raises(ValueError, match="Decoding 1,000 images at 64 x 64"):
        sources.read_images(["unused.png"] * 1000, 64)  # 12 MiB to decode into
    assert data.load((images, labels), image_size=8, batch_size=2, test_fraction=0).image_size == 8


def test_a_damaged_cache_entry_is_discarded_with_a_message_and_decoded_again(tmp_path, cache):
    tiny_image_folder(tmp_path / "folder", train=3, test=1)
    paths = sorted(str(path) for path in (tmp_path / "folder" / "train").rglob("*.png"))
    decoded = []

    def decode():
        decoded.append(1)
        return sources.read_images(paths)

    first = folder_cache.cached(paths, None, decode)
    (entry,) = cache.glob("*.npy")
    size = entry.stat().st_size
    with open(entry, "r+b") as file:  # the last image zeroed, the size kept
        file.seek(size - first[-1].nbytes)
        file.write(bytes(first[-1].nbytes))
    with pytest.warns(UserWarning, match="is damaged: its content does not match its checksum"):
        again = folder_cache.cached(paths, None, decode)
    np.testing.assert_array_equal(again, first)
    assert len(decoded) == 2
    (entry,) = cache.glob("*.npy")
    os.truncate(entry, size // 2)  # a cut entry: reported and replaced too
    with pytest.warns(UserWarning, match="is damaged: it cannot be read"):
        np.testing.assert_array_equal(folder_cache.cached(paths, None, decode), first)
    np.testing.assert_array_equal(folder_cache.cached(paths, None, decode), first)  # a sound entry again
    assert len(decoded) == 3


def rewrite_in_place(path: str, value: int) -> None:
    """New pixels at the end of an uncompressed image, its size and modification time put back."""
    before = os.stat(path)
    time.sleep(0.02)  # past the file system's timestamp granularity (coarse on older kernels)
    with open(path, "r+b") as file:
        file.seek(before.st_size - 48)
        file.write(bytes([value]) * 48)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_image_rewritten_in_place_with_its_size_and_mtime_put_back_is_decoded_again(tmp_path, cache):
    folder = tmp_path / "folder"
    for name in ("dark", "light"):
        (folder / name).mkdir(parents=True)
        for index in range(2):  # BMP: uncompressed, so new pixels keep the file's size
            Image.fromarray(np.full((4, 4, 3), 50, "uint8")).save(folder / name / f"{index}.bmp")
    paths = sorted(str(path) for path in folder.rglob("*.bmp"))

    def decode():
        return sources.read_images(paths)

    assert folder_cache.cached(paths, None, decode)[1].max() == 50  # across processes: the disk cache's key
    rewrite_in_place(paths[1], 200)
    assert folder_cache.cached(paths, None, decode)[1].max() == 200
    assert sources.read_folder(folder).splits["train"][0][3].max() == 50  # in this process: its memory
    rewrite_in_place(paths[3], 150)
    assert sources.read_folder(folder).splits["train"][0][3].max() == 150


def test_a_split_that_leaves_a_class_no_training_image_is_refused():
    images, labels = np.zeros((24, 8, 8, 3), "uint8"), np.arange(24) % 3
    with pytest.raises(ValueError, match=r"\(test 0.2, validation 0.99\) leave class '0' with no training image"):
        data.load((images, labels), validation=0.99)
    with pytest.raises(ValueError, match="no training image"):
        data.load((images, labels), validation=18, test_fraction=0.2)
    assert data.load((images, labels), validation=0.5, batch_size=4).counts["train"] == 9


def test_a_symbolic_link_loop_in_a_class_folder_is_named_with_the_cache_on_or_off(tmp_path, cache, monkeypatch):
    folder = tiny_image_folder(tmp_path / "folder", train=2, test=1)
    ant = tmp_path / "folder" / "train" / "ant"
    (ant / "loop_a.png").symlink_to(ant / "loop_b.png")
    (ant / "loop_b.png").symlink_to(ant / "loop_a.png")
    with pytest.raises(ValueError, match=r"Cannot read image .*loop_a\.png.*symbolic links"):
        sources.read_folder(folder)
    monkeypatch.setenv(folder_cache.CACHE_VARIABLE, "off")
    with pytest.raises(ValueError, match=r"Cannot read image .*loop_a\.png.*symbolic links"):
        sources.read_folder(folder, cache=False)


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path, cache, monkeypatch):
    images = np.arange(2 * 4 * 4 * 3, dtype="uint8").reshape(2, 4, 4, 3)
    paths = []
    for index in range(2):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(images[index]).save(paths[-1])

    def full_disk(file, array):
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_cache.np, "save", full_disk)
    with pytest.warns(UserWarning, match="not cached .*No space left on device"):
        np.testing.assert_array_equal(folder_cache.cached(paths, None, lambda: sources.read_images(paths)), images)
    assert list(cache.iterdir()) == []
    old, recent = cache / "killed.npy.tmp", cache / "writing.npy.tmp"  # a killed writer's, one in progress
    old.write_bytes(b"x")
    recent.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * folder_cache.STALE_SECONDS,) * 2)
    assert folder_cache.evict(str(cache), 10**9) == [str(old)] and recent.exists()


def test_the_cache_keeps_to_its_size_limit_by_evicting_the_least_recently_used(tmp_path, cache, monkeypatch):
    folders = {}
    for name in ("a", "b", "c", "big"):
        folders[name] = [str(tmp_path / f"{name}.png")]
        side = 64 if name == "big" else 16
        Image.fromarray(np.full((side, side, 3), ord(name[0]), "uint8")).save(folders[name][0])

    def load(name):
        return folder_cache.cached(folders[name], None, lambda: sources.read_images(folders[name]))

    monkeypatch.setenv(folder_cache.SIZE_VARIABLE, "2K")  # two 16 x 16 entries (896 bytes each with the header)
    load("a")
    load("b")
    for age, name in enumerate(("a", "b")):  # a used first, then b
        (entry,) = cache.glob(folder_cache.fingerprint(folders[name], None) + "-*.npy")
        os.utime(entry, (1000 + age, 1000 + age))
    load("a")  # a cache hit makes a the most recently used
    load("c")  # three entries do not fit in 2K: b goes
    kept = {path.name.split("-")[0] for path in cache.glob("*.npy")}
    assert kept == {folder_cache.fingerprint(folders[name], None) for name in ("a", "c")}
    with pytest.warns(UserWarning, match=r"not cached: larger than KERAS_L2T_CACHE_SIZE"):
        load("big")  # 12 KiB alone exceed the limit: not stored, nothing evicted for it
    assert len(list(cache.glob("*.npy"))) == 2

    def read_only(*arguments):
        raise PermissionError(errno.EACCES, "Read-only file system")

    monkeypatch.setattr(folder_cache.os, "utime", read_only)  # a read-only cache is still used
    np.testing.assert_array_equal(folder_cache.cached(folders["a"], None, lambda: pytest.fail("decoded")), load("a"))
    assert folder_cache.size_limit() == 2048
    for text, expected in (("500M", 500 * 2**20), ("1.5G", 3 * 2**29), ("4GiB", 2**32), ("12345", 12345)):
        monkeypatch.setenv(folder_cache.SIZE_VARIABLE, text)
        assert folder_cache.size_limit() == expected
    monkeypatch.setenv(folder_cache.SIZE_VARIABLE, "lots")
    with pytest.raises(ValueError, match="KERAS_L2T_CACHE_SIZE='lots' is not a size"):
        folder_cache.size_limit()


def test_an_offline_tfds_download_fails_fast_with_a_message(monkeypatch, tmp_path):
    import requests
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import downloader

    retries = []

    def offline(self, *args, **kwargs):
        retries.append(downloader.MAX_RETRIES)
        raise requests.exceptions.ConnectionError("Max retries exceeded with url: (Failed to resolve host)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(FileNotFoundError, match="could not be downloaded .*offline"):
        data.load("cifar10", data_dir=str(tmp_path), download=True)
    assert retries == [sources.DOWNLOAD_RETRIES] and downloader.MAX_RETRIES == 10, "fewer retries, then restored"


def test_the_contact_sheet_shows_a_sixteen_bit_png_as_it_is(tmp_path):
    from keras_l2t.running import inference

    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((64, 64), 6000, "uint16")).save(path)  # dark grey, about 23 of 255 in 8 bits
    sheet = inference.contact_sheet([{"file": str(path), "top": [("cat", 0.9)]}], str(tmp_path / "sheet.png"))
    pixels = np.asarray(Image.open(sheet).convert("L"), "float32")
    assert pixels.mean() < 170, f"mean brightness {pixels.mean():.0f}: the image was drawn white"
