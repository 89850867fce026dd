import os
import shutil
import urllib.error
from pathlib import Path

import pytest

import keras_l2t  # noqa: F401  (before any test module imports TensorFlow: it sets TF_ENABLE_ONEDNN_OPTS)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
