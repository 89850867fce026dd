"""The package's layers and its acyclic imports, as import-linter checks them (pyproject.toml's contracts)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import keras_l2t

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "Layers: each subpackage imports only those below it"
ACYCLIC = "No import cycles, between subpackages or between the modules of one"


def lint(package_parent: Path) -> str:
    """Run import-linter on the keras_l2t found in `package_parent`; its report."""
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    environment = {**os.environ, "PYTHONPATH": str(package_parent)}
    config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    options = {"capture_output": True, "text": True, "env": environment, "cwd": package_parent, "timeout": 120}
    return subprocess.run(command + config, **options).stdout


def copy_with(tmp_path: Path, module: str, added: str) -> Path:
    """A copy of the package with `added` appended to one of its modules."""
    shutil.copytree(ROOT / "keras_l2t", tmp_path / "keras_l2t", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "keras_l2t" / module, "a") as file:
        file.write(added)
    return tmp_path


def test_the_package_keeps_its_contracts():
    report = lint(ROOT)
    assert f"{LAYERS} KEPT" in report and f"{ACYCLIC} KEPT" in report, report


@pytest.mark.parametrize("inside_a_function", [False, True])
def test_an_upward_import_breaks_the_layers(tmp_path, inside_a_function):
    upward = "from keras_l2t.analysis import transferability  # noqa\n"  # core imports analysis: two layers up
    if inside_a_function:
        upward = "\n\ndef _upward():\n    " + upward
    report = lint(copy_with(tmp_path, "core/process.py", upward))
    assert f"{LAYERS} BROKEN" in report, report  # (and a cycle between subpackages: analysis imports core)
    assert "keras_l2t.core.process -> keras_l2t.analysis.transferability" in report


def test_a_cycle_between_modules_breaks_acyclic_siblings(tmp_path):
    cycle = "\n\ndef _back():\n    from keras_l2t.analysis import intervals  # noqa\n"  # intervals imports sequential
    report = lint(copy_with(tmp_path, "analysis/sequential.py", cycle))
    assert f"{ACYCLIC} BROKEN" in report and f"{LAYERS} KEPT" in report, report


def test_every_public_name_is_its_owning_module():
    import importlib

    for name, owner in keras_l2t.PUBLIC_MODULES.items():
        public = importlib.import_module(f"keras_l2t.{name}")
        assert public is importlib.import_module(owner) and public.__spec__.name == owner
        assert getattr(keras_l2t, name) is public
    from keras_l2t import strategies

    assert strategies.__name__ == "keras_l2t.training.strategies"


def test_public_names_cover_every_module():
    modules = {path.stem for path in (ROOT / "keras_l2t").glob("*/*.py") if path.stem != "__init__"}
    assert modules == set(keras_l2t.PUBLIC_MODULES)
