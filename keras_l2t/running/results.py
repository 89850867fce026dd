"""The results file of a comparison: one verified row per finished run in `<out>/results.csv`, one writer.

- A row is added by writing a new file and renaming it over the old one, so an interruption at any moment
  leaves either the old table or the new one.
- Every row is verified when read (all columns, numbers where numbers belong, a readable config whose
  `RunConfig.key` is the row's key, one row per key): a broken row (a file cut by a full disk, edited by hand, a
  row pasted twice) is reported with the file's name and line, set aside in `results.csv.rejected`, and its run
  is redone (a second row of a key: the first one stays). A file saved by a spreadsheet (UTF-8 BOM, CRLF line
  ends) reads as the file it was.
- `lock(out)` makes one process the only writer of an output folder: a second process on the same `--out`
  stops at once with a message that names the holder (an OS file lock, released by the OS however the holder
  ends, SIGKILL included).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
import warnings

import pandas as pd

from keras_l2t.core.paths import GridPaths
from keras_l2t.running.config import RunConfig, parse_samples, samples_label

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then the user's to ensure
    fcntl = None

__all__ = ["RESULT_COLUMNS", "OutputInUse", "append_result", "lock", "read_results", "remove_finished_backups"]

RESULT_COLUMNS = [
    "run", "key", "strategy", "network", "dataset", "samples_per_class", "imbalanced", "seed", "epochs_run",
    "best_epoch", "train_accuracy", "validation_accuracy", "test_accuracy", "wall_seconds", "diverged_epoch",
    "per_class_accuracy", "meta_health",
]  # fmt: skip
_INTEGERS = ("seed", "epochs_run", "best_epoch")
_REQUIRED_NUMBERS = ("train_accuracy", "wall_seconds")
_OPTIONAL_NUMBERS = ("validation_accuracy", "test_accuracy", "diverged_epoch")
_SECOND_ROW = "a second row of the run"  # its run is recorded: the first row stays, nothing is redone


class OutputInUse(RuntimeError):
    """Another process is writing to the same output folder."""


_held: dict[str, tuple] = {}


@contextlib.contextmanager
def lock(out: str):
    """Hold `<out>/.lock` while this block runs, so that this process is the folder's only writer.

    Re-entrant within a process. The lock is the OS's (`flock`), so it goes with its process, however that ends.

    Raises:
        OutputInUse: another process holds it (the message names its host, pid and start time).

    """
    path = os.path.abspath(os.path.join(out, ".lock"))
    if path in _held or fcntl is None:
        yield
        return
    os.makedirs(out, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115  (held open for the lifetime of the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise OutputInUse(
            f"{out} is in use by {holder}: one process writes a results folder at a time. Wait for it to finish "
            "(it skips what is done, so running the command again afterwards is safe), or choose another --out."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _held[path] = (handle,)
    try:
        yield
    finally:
        del _held[path]
        handle.close()  # closing releases the lock


def _number(text: str, column: str, required: bool):
    if text == "":
        if required:
            raise ValueError(f"no {column}")
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{column} is {text}")
    return value


def _verified(row: list[str], header: list[str]) -> dict:
    """One row as a dict of typed values; ValueError says what is wrong with it."""
    if len(row) != len(header):
        raise ValueError(f"{len(row)} fields where the header has {len(header)} (a cut or damaged row)")
    record = dict(zip(header, row, strict=True))
    if not record.get("run") or not record.get("key") or not record.get("strategy"):
        raise ValueError("no run, key or strategy")
    config = json.loads(record.get("config") or "null")
    if not isinstance(config, dict) or "strategy" not in config:
        raise ValueError("no readable config")
    _check_key(record["key"], config)
    for column in _INTEGERS:
        record[column] = int(_number(record.get(column, ""), column, True))
    for column in _REQUIRED_NUMBERS + _OPTIONAL_NUMBERS:
        if column in record:
            record[column] = _number(record[column], column, column in _REQUIRED_NUMBERS)
    record["imbalanced"] = record.get("imbalanced") == "True"
    record["samples_per_class"] = samples_label(parse_samples(record.get("samples_per_class") or None))
    return record


def _check_key(key: str, config: dict) -> None:
    """A current (40-digit) key must be its config's; older keys match no config, so their runs are redone anyway."""
    if len(key) != 40:
        return
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    try:
        config_key = RunConfig(**{name: value for name, value in config.items() if name in fields}).key
    except (TypeError, ValueError) as error:
        raise ValueError(f"its config is not a valid run ({error})") from None
    if config_key != key:
        raise ValueError(f"its key {key[:10]}... is not its config's ({config_key[:10]}...): one of them was changed")


def _read_rows(path: str) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """The verified rows of a results file, and (line, reason, text) for each broken one."""
    with open(path, newline="", encoding="utf-8-sig") as file:  # a spreadsheet's BOM is not part of the header
        text = file.read()
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(text), strict=True)
    rows, broken, first_line = [], [], {}
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return [], ([(1, "no header", text)] if text.strip() else [])
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:  # e.g. a file cut inside a quoted config
            broken.append((start, f"unreadable ({error})", "".join(lines[start - 1 :])))
            break
        try:
            record = _verified(row, header)
            if record["key"] in first_line:
                raise ValueError(f"{_SECOND_ROW} of line {first_line[record['key']]}")
            first_line[record["key"]] = start
            rows.append(record)
        except (ValueError, json.JSONDecodeError) as error:
            broken.append((start, str(error), "".join(lines[start - 1 : reader.line_num])))
    return rows, broken


def read_results(out: str) -> pd.DataFrame:
    """The finished runs recorded in `<out>/results.csv`, every row verified (an empty frame if none).

    `samples_per_class` holds numbers, and "all" for the whole training set (`config.samples_label`).
    A broken row is reported (a warning naming the file and line) and left out, so its run is redone.
    """
    path = GridPaths(out).results
    if not os.path.exists(path):
        return pd.DataFrame(columns=RESULT_COLUMNS + ["config"])
    rows, broken = _read_rows(path)
    for line, reason, _ in broken:
        redone = "" if reason.startswith(_SECOND_ROW) else " and its run will be redone"
        warnings.warn(f"{path}, line {line}: {reason}; the row is left out{redone}.", stacklevel=2)
    columns = list(dict.fromkeys(RESULT_COLUMNS + [column for row in rows for column in row]))
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["rejected"] = [(line, reason, text) for line, reason, text in broken]
    return table


def append_result(out: str, result: dict) -> pd.DataFrame:
    """Add one run's row to `<out>/results.csv` atomically (write a new file, then rename it over the old).

    Broken rows found on the way are moved to `<out>/results.csv.rejected`, verbatim.

    Args:
        out: the grid's output folder.
        result: what `experiment.run` returned.

    Returns:
        The whole table after the append.

    """
    row = {column: result.get(column) for column in RESULT_COLUMNS}
    row["samples_per_class"] = samples_label(row["samples_per_class"])
    config_fields = {field.name for field in dataclasses.fields(RunConfig)}
    row["config"] = json.dumps({key: value for key, value in result.items() if key in config_fields})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported by the grid's own read before it trains
        earlier = read_results(out)
    rejected = earlier.attrs.get("rejected", [])
    table = pd.concat([earlier, pd.DataFrame([row])], ignore_index=True)
    if rejected:
        with open(GridPaths(out).results + ".rejected", "a") as file:
            file.writelines(text if text.endswith("\n") else text + "\n" for _, _, text in rejected)
    handle, temporary = tempfile.mkstemp(dir=out, prefix=".results.", suffix=".csv")
    with os.fdopen(handle, "w") as file:
        table.to_csv(file, index=False)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, GridPaths(out).results)
    return table


def remove_finished_backups(out: str, table: pd.DataFrame) -> list[str]:
    """Delete the backups of the runs a results table records (a kill between a row and its backup's removal).

    Args:
        out: the grid's output folder.
        table: its verified rows (`read_results`).

    Returns:
        The names of the runs whose backups were removed.

    """
    removed = [name for name in table["run"] if os.path.isdir(GridPaths(out).run(name).backup_root)]
    for name in removed:
        shutil.rmtree(GridPaths(out).run(name).backup_root, ignore_errors=True)
    return removed
