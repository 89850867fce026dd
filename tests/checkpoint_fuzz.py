"""Fuzz the PyTorch checkpoint reader with mutated copies of a real checkpoint, in this process.

Run by tests/test_checkpoint_safety.py in a subprocess, so that a crash shows as a signal:
`python tests/checkpoint_fuzz.py <checkpoint> <legacy|zip> <seed> <count> <folder>`. Prints one JSON line per
mutation: `loaded` (every tensor has the shape and dtype its pickle declares and lies inside its storage),
`refused` (a CheckpointError naming the file) or `bad` (anything else, with what went wrong).
"""

import collections
import faulthandler
import io
import json
import pickle
import pickletools
import random
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from keras_l2t.networks.torch_checkpoint import TORCH_STORAGE_DTYPES, CheckpointError, read_torch_checkpoint

INTEGER_OPCODES = {"BININT", "BININT1", "BININT2", "LONG1", "INT"}
KINDS = ("flip", "flip", "truncate", "insert", "delete", "tensor", "tensor", "storage_size", "random")


def skip_pickle(handle: io.BytesIO) -> None:
    """Move past one pickle without running it."""
    for _ in pickletools.genops(handle):
        pass


def split_legacy(data: bytes) -> tuple[bytes, bytes, bytes, int]:
    """The legacy file's three header pickles, its main pickle, its storage-key pickle, and where storages start."""
    handle = io.BytesIO(data)
    for _ in range(3):
        skip_pickle(handle)
    head = handle.tell()
    skip_pickle(handle)
    main = handle.tell()
    skip_pickle(handle)
    return data[:head], data[head:main], data[main : handle.tell()], handle.tell()


def declared(pickled: bytes | io.BytesIO):
    """The main pickle with each tensor replaced by ('tensor', (key, type, elements, view), offset, size, stride)."""

    class Inert:
        def __init__(self, *args):
            pass

        def __setstate__(self, state):
            pass

    class Declared(pickle._Unpickler):  # Python's unpickler, as the reader uses
        def find_class(self, module, name):
            if name.startswith("_rebuild_tensor"):
                return lambda storage, offset, size, stride, *unused: ("tensor", storage, offset, tuple(size), stride)
            if module == "torch" and name in TORCH_STORAGE_DTYPES:
                return name
            return {"OrderedDict": collections.OrderedDict, "Size": tuple}.get(name, Inert)

        def persistent_load(self, saved_id):
            return saved_id[2], saved_id[1], saved_id[4], saved_id[5] if len(saved_id) > 5 else None

    return Declared(pickled if isinstance(pickled, io.BytesIO) else io.BytesIO(pickled)).load()


def legacy_storages(data: bytes, keys: list, start: int, types: dict) -> dict[str, bytes]:
    """Each storage's raw bytes, after its 8-byte element count."""
    storages = {}
    for key in keys:
        count = int.from_bytes(data[start : start + 8], "little")
        size = count * np.dtype(TORCH_STORAGE_DTYPES[types[key]]).itemsize
        storages[key], start = data[start + 8 : start + 8 + size], start + 8 + size
    return storages


def storage_types(value, found: dict) -> dict:
    """Storage key -> storage type name, for every tensor in a `declared` structure."""
    if isinstance(value, tuple) and value[:1] == ("tensor",):
        found[value[1][0]] = value[1][1]
    elif isinstance(value, dict):
        for item in value.values():
            storage_types(item, found)
    return found


def zip_pickle(main: bytes) -> bytes:
    """The legacy main pickle as the zip format's data.pkl: persistent ids lose their sixth item (a None view)."""
    operations = list(pickletools.genops(main))
    cut = set()
    for index, (opcode, _, _) in enumerate(operations):
        if opcode.name == "BINPERSID":
            back = index - 1
            while operations[back][0].name in ("BINPUT", "LONG_BINPUT"):
                back -= 1
            if operations[back][0].name == "TUPLE" and operations[back - 1][0].name == "NONE":
                cut.add(operations[back - 1][2])
    pieces, start = [], 0
    for position in sorted(cut):
        pieces.append(main[start:position])
        start = position + 1
    return b"".join(pieces) + main[start:]


def make_zip(main: bytes, storages: dict[str, bytes]) -> bytes:
    """A zip-format checkpoint (as `torch.save` writes since PyTorch 1.6) of a legacy main pickle and storages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", zip_pickle(main))
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def integer_fields(main: bytes) -> list[tuple[int, int]]:
    """(position, length) of each integer opcode that declares a storage size or a tensor's offset, shape, stride."""
    operations = list(pickletools.genops(main))
    fields = []
    for index, (opcode, _, _) in enumerate(operations):
        if opcode.name != "BINPERSID":
            continue
        before = [op for op in operations[index - 8 : index] if op[0].name in INTEGER_OPCODES][-1:]
        after = []
        for op in operations[index + 1 :]:
            if op[0].name == "REDUCE":
                break
            if op[0].name in INTEGER_OPCODES:
                after.append(op)
        for op in before + after:
            end = next(o[2] for o in operations if o[2] > op[2])
            fields.append((op[2], end - op[2]))
    return fields


def odd_integer(rng: random.Random, value: int) -> int:
    return rng.choice([0, 1, -1, value - 1, value + 1, 2 * value, 3**20, 2**31 - 1, 2**40, 2**63, rng.randrange(10**6)])


class Base:
    """The real checkpoint, in one format, with what the mutations need."""

    def __init__(self, path: Path, form: str):
        data = path.read_bytes()
        head, main, keys_pickle, start = split_legacy(data)
        self.head, self.main, self.keys_pickle, self.form = head, main, keys_pickle, form
        keys = pickle.loads(keys_pickle)
        types = storage_types(declared(main), {})
        self.storages = legacy_storages(data, keys, start, types)
        self.itemsizes = {key: np.dtype(TORCH_STORAGE_DTYPES[name]).itemsize for key, name in types.items()}
        self.fields = integer_fields(main)
        self.data = self.assemble(main, self.storages)
        pickle_at = self.data.find(zip_pickle(main) if form == "zip" else main)
        self.structure = (0, pickle_at + len(main) + 64)  # headers, main pickle and the first storage's start
        if form == "zip":
            self.tail = self.data.find(b"PK\x01\x02")  # the central directory

    def assemble(self, main: bytes, storages: dict[str, bytes], counts: dict | None = None) -> bytes:
        if self.form == "zip":
            return make_zip(main, storages)
        counts = counts or {}
        parts = [self.head, main, self.keys_pickle]
        for key, raw in storages.items():
            count = counts.get(key, len(raw) // self.itemsizes[key])
            parts += [count.to_bytes(8, "little", signed=True), raw]
        return b"".join(parts)

    def position(self, rng: random.Random) -> int:
        choice = rng.random()
        if choice < 0.5:
            return rng.randrange(*self.structure)
        if choice < 0.7 and self.form == "zip":
            return rng.randrange(self.tail, len(self.data))
        return rng.randrange(len(self.data))

    def mutate(self, rng: random.Random, kind: str) -> bytes:
        data = bytearray(self.data)
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                data[self.position(rng)] ^= rng.randint(1, 255)
            return bytes(data)
        if kind == "truncate":
            return bytes(data[: self.position(rng)])
        if kind == "insert":
            at = self.position(rng)
            return bytes(data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:])
        if kind == "delete":
            at = self.position(rng)
            return bytes(data[:at] + data[at + rng.randint(1, 64) :])
        if kind == "tensor":
            main = self.main
            for _ in range(rng.randint(1, 2)):
                position, length = rng.choice(self.fields)
                value = pickle.loads(b"\x80\x02" + main[position : position + length] + b".")
                encoded = pickle.dumps(odd_integer(rng, value), 2)[2:-1]
                main = main[:position] + encoded + main[position + length :]
                if len(encoded) != length:
                    break  # the fields after this one moved
            return self.assemble(main, self.storages)
        if kind == "storage_size":
            key = rng.choice(list(self.storages))
            raw = self.storages[key]
            if self.form == "legacy":
                count = odd_integer(rng, len(raw) // self.itemsizes[key]) % 2**63
                return self.assemble(self.main, self.storages, {key: count})
            cut = rng.randint(1, min(len(raw), 64))
            changed = raw[:-cut] if rng.random() < 0.5 else raw + rng.randbytes(cut)
            return self.assemble(self.main, {**self.storages, key: changed})
        return rng.randbytes(rng.randint(0, 100_000))


def check_loaded(value, declaration) -> str | None:
    """What is wrong with a loaded structure against its declaration (None when nothing is)."""
    if isinstance(declaration, tuple) and declaration[:1] == ("tensor",):
        (key, _, elements, view), dtype = declaration[1], np.dtype(TORCH_STORAGE_DTYPES[declaration[1][1]])
        if not isinstance(value, np.ndarray) or value.shape != declaration[3] or value.dtype != dtype:
            return f"tensor of storage {key}: got {type(value).__name__} {getattr(value, 'shape', '')}"
        root = value.base
        if not isinstance(root, np.ndarray) or root.nbytes != elements * dtype.itemsize:
            return f"tensor of storage {key}: its storage is not {elements} elements"
        low, high = np.lib.array_utils.byte_bounds(root)
        if view is not None:
            low, high = low + view[1] * dtype.itemsize, low + (view[1] + view[2]) * dtype.itemsize
        first, last = np.lib.array_utils.byte_bounds(value)
        if value.size and not (low <= first and last <= high):
            return f"tensor of storage {key} reads bytes {first - low}..{last - low} outside 0..{high - low}"
        return None
    if isinstance(declaration, dict):
        if not isinstance(value, dict) or list(value) != list(declaration):
            return "a dict's keys differ"
        return next(filter(None, (check_loaded(value[k], d) for k, d in declaration.items())), None)
    if isinstance(declaration, (list, tuple)):
        if type(value) is not type(declaration) or len(value) != len(declaration):
            return "a list or tuple differs"
        return next(filter(None, map(check_loaded, value, declaration)), None)
    return None


def declaration_of(data: bytes, form: str):
    if form == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return declared(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    handle = io.BytesIO(data)
    for _ in range(3):
        pickle._Unpickler(handle).load()  # the headers: numbers, strings and dicts (the reader accepted them)
    return declared(handle)


def outcome(path: Path, data: bytes) -> tuple[str, str]:
    path.write_bytes(data)
    try:
        loaded = read_torch_checkpoint(path)
    except CheckpointError as error:
        return ("refused", str(error)) if str(path) in str(error) else ("bad", f"no file name: {error}")
    except Exception as error:  # anything but a CheckpointError is a defect
        return "bad", f"{type(error).__name__}: {error}"
    try:
        problem = check_loaded(loaded, declaration_of(data, "zip" if data.startswith(b"PK\x03\x04") else "legacy"))
    except Exception as error:  # loaded although the declarations cannot be read back
        problem = f"loaded, but its declarations do not parse: {type(error).__name__}: {error}"
    return ("bad", problem) if problem else ("loaded", "")


def main(checkpoint: str, form: str, seed: int, count: int, folder: str) -> None:
    faulthandler.enable()  # a crash prints where it happened
    base = Base(Path(checkpoint), form)
    path = Path(folder) / f"mutant_{form}.pth.tar"
    rng = random.Random(seed)
    for index in range(count):
        kind = rng.choice(KINDS)
        start = time.perf_counter()
        result, detail = outcome(path, base.mutate(rng, kind))
        line = {"index": index, "kind": kind, "outcome": result, "detail": detail[:300]}
        print(json.dumps(line | {"seconds": round(time.perf_counter() - start, 4)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
