"""User modules that register strategies (`strategies.register`), imported here and in every worker process."""

from __future__ import annotations

import importlib
import os

__all__ = ["IMPORTS_VARIABLE", "import_modules"]

IMPORTS_VARIABLE = "KERAS_L2T_IMPORTS"  # modules of user strategies, for worker processes (Ray) to import too


def import_modules(modules: list[str] | None = None) -> None:
    """Import the modules that register user strategies, here and (through the environment) in every worker.

    Args:
        modules: module names to import and add to `$KERAS_L2T_IMPORTS`; None imports those already listed there
            (what a worker does before its run).

    Raises:
        ImportError: a module cannot be imported, with how to make it importable.

    """
    listed = [name for name in os.environ.get(IMPORTS_VARIABLE, "").split(",") if name]
    for module in modules or listed:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f"Cannot import {module!r} ({error}); put it in the working directory or on PYTHONPATH."
            ) from error
    if modules:
        os.environ[IMPORTS_VARIABLE] = ",".join(dict.fromkeys(listed + list(modules)))
