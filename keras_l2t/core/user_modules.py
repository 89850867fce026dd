"""User modules that register strategies (`strategies.register`), imported here and in every worker process."""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["IMPORTS_VARIABLE", "import_modules"]

IMPORTS_VARIABLE = "KERAS_L2T_IMPORTS"  # modules of user strategies, for worker processes (Ray) to import too


def import_modules(modules: list[str] | None = None) -> None:
    """Import the modules that register user strategies, here and (through the environment) in every worker.

    A script's `sys.path` starts with its own folder, not the working directory: the driver adds the working
    directory to `sys.path` and to `$PYTHONPATH` (which the Ray executor forwards), so a module beside the user is
    found here and in the workers.

    Args:
        modules: module names to import and add to `$KERAS_L2T_IMPORTS`; None imports those already listed there
            (what a worker does before its run).

    Raises:
        ImportError: a module cannot be imported, with how to make it importable.

    """
    listed = [name for name in os.environ.get(IMPORTS_VARIABLE, "").split(",") if name]
    if modules:
        _add_working_directory()
    for module in modules or listed:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f"Cannot import {module!r} ({error}); put it in the working directory or on PYTHONPATH."
            ) from error
    if modules:
        os.environ[IMPORTS_VARIABLE] = ",".join(dict.fromkeys(listed + list(modules)))


def _add_working_directory() -> None:
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])
