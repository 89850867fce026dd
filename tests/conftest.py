import os
import shutil
import tempfile
import urllib.error
from pathlib import Path

import pytest

from keras_l2t.core import process

process.configure()  # the scripts' setting, before any test module imports TensorFlow (see keras_l2t.core.process)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# decoded image folders are cached per test session, not in the user's ~/.cache (keras_l2t.datasets.folder_cache)
os.environ.setdefault("KERAS_L2T_CACHE", tempfile.mkdtemp(prefix="keras_l2t_cache_"))

SHARED = Path(os.environ.get("KERAS_L2T_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real data and weights beside the repository (see ../shared/README.md)."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing; CI needs the shared data beside the repository")
        pytest.skip(f"{SHARED} is missing (set KERAS_L2T_SHARED)")
    return SHARED


@pytest.fixture
def fake_download(monkeypatch, tmp_path):
    """An empty Keras cache and a network that serves only the files we register (none by default)."""
    from keras.src.utils import file_utils

    served: dict[str, Path] = {}
    (tmp_path / "keras_home").mkdir()  # Keras falls back to a temporary cache when this folder is missing
    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path / "keras_home"))

    def urlretrieve(url, target, *unused):
        if url not in served:
            raise urllib.error.URLError("no network in the tests")
        shutil.copyfile(served[url], target)

    monkeypatch.setattr(file_utils, "urlretrieve", urlretrieve)
    return served


def linked_subset(source: Path, target: Path, per_class: int) -> str:
    """A small image folder of links to the first `per_class` files of each class folder of a shared folder.

    Real images, read through the same folder code, at a fraction of the decoding time; nothing is copied.
    """
    class_folders = sorted({path.parent for path in source.rglob("*") if path.is_file()})
    for folder in class_folders:
        destination = target / folder.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (destination / image.name).symlink_to(image)
    return str(target)


def tiny_image_folder(root: Path, classes=("ant", "bee", "cow"), train: int = 12, test: int = 4, seed: int = 0) -> str:
    """A `<root>/{train,test}/<class>/*.png` folder of 32x32 images whose brightness tells the class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 80, (32, 32, 3)) + 80 * label
                Image.fromarray(pixels.astype("uint8")).save(root / split / name / f"{index}.png")
    return str(root)


def load_app(name: str = "compare_strategies"):
    """Import `apps/<name>.py` as a module (the apps are scripts, not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "apps" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
