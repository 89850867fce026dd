"""Every notebook runs end to end on tiny settings (its parameters cell overridden), pointed at ../shared."""

from pathlib import Path

import nbformat
import pytest
from conftest import linked_subset
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def overrides(name: str, shared: Path, tmp_path: Path) -> dict:
    # real images, few of them: one CIFAR-10 folder (validation and test are carved from it), a cats-vs-dogs subset
    cifar_test = linked_subset(shared / "data/cifar10/test", tmp_path / "cifar10", per_class=40)
    cats_vs_dogs = linked_subset(shared / "data/cats_vs_dogs", tmp_path / "cats_vs_dogs", per_class=12)
    weights = str(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz")
    return {
        "01_feature_extraction_and_fine_tuning": {
            "DATA": cats_vs_dogs,
            "WEIGHTS": str(shared / "weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"),
            "IMAGE_SIZE": 64,
            "SAMPLES_PER_CLASS": 4,
            "EPOCHS": 1,
            "FINE_TUNE_EPOCHS": 1,
            "LOG_DIR": str(tmp_path / "logs"),
            "VERBOSE": 0,
        },
        "02_l2t_with_fit": {
            "DATA": cifar_test,
            "SOURCE_WEIGHTS": weights,
            "METHOD": "l2t_www",
            "SAMPLES_PER_CLASS": 2,
            "VALIDATION": 20,
            "EPOCHS": 1,
            "LOG_DIR": str(tmp_path / "logs"),
            "VERBOSE": 0,
        },
        "03_compare_strategies": {
            "DATA": cifar_test,
            "SOURCE_WEIGHTS": weights,
            "STRATEGIES": ["scratch", "ufm"],
            "SAMPLES_PER_CLASS": [2],
            "SEEDS": 2,
            "EPOCHS": 1,
            "VALIDATION": 20,
            "OUT": str(tmp_path / "compare"),
        },
    }[name]


# the L2T notebook in the default run; the other two (about a minute each) are slow: their library paths have tests
DEFAULT_NOTEBOOK = "02_l2t_with_fit"


@pytest.mark.parametrize(
    "path",
    [path if path.stem == DEFAULT_NOTEBOOK else pytest.param(path, marks=pytest.mark.slow)
     for path in sorted(NOTEBOOKS.glob("*.ipynb"))],
    ids=lambda path: path.stem,
)  # fmt: skip
def test_notebook_runs(path, shared, tmp_path):
    book = nbformat.read(path, as_version=4)
    position = next(i for i, cell in enumerate(book.cells) if "parameters" in cell.metadata.get("tags", []))
    values = overrides(path.stem, shared, tmp_path)
    book.cells.insert(position + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items())))
    source = "\n".join(cell.source for cell in book.cells if cell.cell_type == "code")
    assert "import keras_l2t" in source or "from keras_l2t" in source
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in book.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
