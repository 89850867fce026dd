"""Checkpoints read within their bytes (issue 39, finding 1) and offline downloads that fail fast (finding 6).

Each damaged file is a mutated copy of the real L2T-ww checkpoint, written to a temporary folder.
"""

import io
import json
import os
import pickle
import pickletools
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from checkpoint_fuzz import Base
from conftest import load_app, tiny_image_folder

from keras_l2t.networks import backbones, weights
from keras_l2t.networks.torch_checkpoint import CheckpointError, read_torch_checkpoint
from keras_l2t.networks.weight_formats import read_state_dict
from keras_l2t.networks.weights import WeightsError

CHECKPOINT = "weights/resnet32_tinyimagenet_l2tww.pth.tar"
FUZZ = Path(__file__).with_name("checkpoint_fuzz.py")
MUTATIONS_PER_FORMAT = 500


@pytest.fixture(scope="module")
def real(shared) -> bytes:
    return (shared / CHECKPOINT).read_bytes()


def first_tensor_field(real: bytes, field: int) -> int:
    """Where the first tensor's `field`-th integer (0 offset, 1-4 shape, 5-8 strides) sits in the file."""
    handle = io.BytesIO(real)
    for _ in range(3):
        pickle.load(handle)
    start = handle.tell()
    persistent = real.index(b"Q", real.index(b"cuda:0", start))  # BINPERSID after the first storage's location
    integers = [i for i in range(persistent + 1, persistent + 40) if real[i] == ord("K")][field]
    return integers


def write(tmp_path: Path, data: bytes, name: str = "damaged.pth.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_tensor_larger_than_its_storage_is_refused(real, tmp_path):
    size = first_tensor_field(real, 1)
    assert real[size : size + 2] == b"K\x10"  # conv1.weight is 16 x 3 x 3 x 3 in a storage of 432 floats
    path = write(tmp_path, real[: size + 1] + b"\xff" + real[size + 2 :])  # 255 x 3 x 3 x 3
    with pytest.raises(CheckpointError, match=f"{path}.*shape \\(255, 3, 3, 3\\).*holds 432"):
        read_torch_checkpoint(path)
    base = Base(Path(path), "zip")
    zipped = write(tmp_path, base.assemble(base.main, base.storages), "damaged.pth")
    with pytest.raises(CheckpointError, match=f"{zipped}.*shape \\(255, 3, 3, 3\\).*holds 432"):
        read_torch_checkpoint(zipped)


def test_strides_beyond_the_storage_are_refused_not_a_crash(real, tmp_path):
    stride = first_tensor_field(real, 5)
    assert real[stride : stride + 2] == b"K\x1b"  # the first stride, 27
    crafted = real[:stride] + b"J" + (2**28).to_bytes(4, "little") + real[stride + 2 :]
    path = write(tmp_path, crafted)
    code = "from keras_l2t.networks.torch_checkpoint import read_torch_checkpoint as read\n"
    code += f"try: read({str(path)!r})\nexcept Exception as error: print(error)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the reader died with {run.returncode}: {run.stderr[-2000:]}"  # was -11 (SIGSEGV)
    assert f"{path} is not a readable PyTorch checkpoint" in run.stdout and "strides (268435456, 9, 3, 1)" in run.stdout


def test_deeply_nested_pickles_are_refused_not_a_crash(real, tmp_path):
    handle = io.BytesIO(real)
    for _ in range(3):
        pickle.load(handle)
    nested = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."  # a list in a list, 100,000 deep (200 KB)
    paths = [write(tmp_path, real[: handle.tell()] + nested + pickle.dumps([], 2), "deep_state.pth")]
    paths.append(write(tmp_path, real[: handle.tell()] + pickle.dumps({}, 2) + nested, "deep_keys.pth"))
    code = (
        "import sys\nfrom keras_l2t.networks.torch_checkpoint import CheckpointError, read_torch_checkpoint as read\n"
    )
    code += "for path in sys.argv[1:]:\n    try: read(path)\n    except CheckpointError as error: print(error)"
    run = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the reader died with {run.returncode}: {run.stderr[-2000:]}"
    assert [line.split(" is not a readable")[0] for line in run.stdout.splitlines()] == list(map(str, paths))


def test_a_truncated_checkpoint_is_refused_with_its_name(real, tmp_path):
    last = write(tmp_path, real[:-800], "last_800_bytes_missing.pth.tar")  # loaded with a non-finite fc.bias before
    with pytest.raises(CheckpointError, match=f"{last}.*ends inside storage .*0 of 800 bytes"):
        read_state_dict(last)
    half = write(tmp_path, real[: len(real) // 2], "half.pth.tar")  # IndexError before
    with pytest.raises(CheckpointError, match=f"{half} is neither .* nor a readable PyTorch checkpoint: the file ends"):
        backbones.build("resnet32", weights=str(half))
    header = write(tmp_path, real[:20_000], "header_only.pth.tar")
    with pytest.raises(CheckpointError, match=f"{header} is not a readable .*data is cut short or damaged"):
        read_torch_checkpoint(header)


def test_half_a_source_checkpoint_is_a_one_line_error(real, tmp_path, capsys):
    half = write(tmp_path, real[: len(real) // 2], "half.pth.tar")  # ended in IndexError before
    arguments = ["--preset", "none", "--dataset", tiny_image_folder(tmp_path / "images"), "--no-cache"]
    arguments += ["--strategies", "fm_uniform", "--source-weights", str(half), "--epochs", "1"]
    assert load_app().main([*arguments, "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"error: {half} is neither") and "the file ends inside storage" in message


def test_pickles_that_state_huge_sizes_allocate_nothing(real, tmp_path):
    handle = io.BytesIO(real)
    for _ in range(3):
        pickle.load(handle)
    memo = next(at for op, _, at in pickletools.genops(handle) if op.name == "LONG_BINPUT")
    assert real[memo] == ord("r")
    huge_memo = write(tmp_path, real[: memo + 1] + (2**31 - 1).to_bytes(4, "little") + real[memo + 5 :], "memo.pth")
    state = read_torch_checkpoint(huge_memo)["state_dict"]  # CPython's C unpickler asks for 32 GiB here
    assert len(state) == 201 and state["fc.bias"].shape == (200,)  # the entry is never read back: a valid file
    buffer = write(tmp_path, b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + real[11:], "buffer.pth")
    with pytest.raises(CheckpointError, match=f"{buffer} .*protocol-5 buffer"):
        read_torch_checkpoint(buffer)  # pickle's BYTEARRAY8 would allocate 1 TiB first


def test_boolean_storages_hold_only_zero_and_one(tmp_path):
    storage = b"(X\x07\x00\x00\x00storagectorch\nBoolStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00K\x04\x85K\x01\x85\x89)tR"
    for name, raw in (("valid.pth", b"\x00\x01\x01\x00"), ("five.pth", b"\x00\x05\x01\x00")):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr("archive/data.pkl", b"\x80\x02}X\x04\x00\x00\x00mask" + tensor + b"s.")
            archive.writestr("archive/data/0", raw)
    np.testing.assert_array_equal(read_torch_checkpoint(tmp_path / "valid.pth")["mask"], [False, True, True, False])
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'five.pth'} .*bytes other than 0 and 1"):
        read_torch_checkpoint(tmp_path / "five.pth")  # NumPy booleans that are neither True nor False


def test_non_finite_weights_are_refused(real, tmp_path, shared):
    bias = read_state_dict(shared / CHECKPOINT)["fc.bias"]
    at = real.rindex(bias.tobytes())  # fc.bias, the last storage
    damaged = bytearray(real)
    damaged[at + 4 * 7 : at + 4 * 8] = np.float32(np.inf).tobytes()
    damaged[at + 4 * 9 : at + 4 * 10] = np.float32(np.nan).tobytes()
    path = write(tmp_path, bytes(damaged))
    assert np.isinf(read_torch_checkpoint(path)["state_dict"]["fc.bias"][7])  # the reader reads what is there
    with pytest.raises(WeightsError, match=f"{path}: .fc.bias. holds 2 non-finite values"):
        read_state_dict(path)


def test_the_zip_copy_reads_as_the_published_checkpoint(real, tmp_path, shared):
    base = Base(shared / CHECKPOINT, "zip")
    zipped = read_state_dict(write(tmp_path, base.data, "zipped.pth"))
    with np.load(shared / "weights/resnet32_tinyimagenet_l2tww_state_dict.npz") as expected:
        assert sorted(zipped) == sorted(expected.files)
        for key in expected.files:
            np.testing.assert_array_equal(zipped[key], expected[key])


def fuzz(shared: Path, form: str, seed: int, folder: Path) -> subprocess.Popen:
    folder.mkdir()
    command = [sys.executable, str(FUZZ), str(shared / CHECKPOINT), form, str(seed), str(MUTATIONS_PER_FORMAT)]
    environment = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FUZZ.parent), os.environ.get("PYTHONPATH")]))
    }
    return subprocess.Popen(
        [*command, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def test_a_thousand_mutated_checkpoints_never_crash_the_reader(shared, tmp_path):
    start = time.perf_counter()
    runs = {form: fuzz(shared, form, seed, tmp_path / form) for form, seed in (("legacy", 39), ("zip", 40))}
    for form, run in runs.items():
        try:
            out, err = run.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            run.kill()
            out, err = run.communicate()
            pytest.fail(f"{form}: hung after mutation {len(out.splitlines())}: {err[-2000:]}")
        rows = [json.loads(line) for line in out.splitlines()]
        assert run.returncode == 0, (
            f"{form}: mutation {len(rows)} ended the reader with {run.returncode}: {err[-3000:]}"
        )
        assert len(rows) == MUTATIONS_PER_FORMAT
        bad = [row for row in rows if row["outcome"] != "loaded" and row["outcome"] != "refused"]
        assert not bad, f"{form}: {bad[:5]}"
        outcomes = {kind: sum(row["outcome"] == kind for row in rows) for kind in ("loaded", "refused")}
        print(f"{form}: {outcomes} of {len(rows)} mutations", end="; ")
        assert outcomes["loaded"] and outcomes["refused"], "both outcomes occur, or the fuzz tests too little"
    print(f"{time.perf_counter() - start:.1f} s")


def test_offline_download_fails_fast_with_where_to_put_the_file(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path / "keras_home"))
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    waits = []

    def unanswered(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, *unused):
        """A network whose packets vanish: a connection waits for its timeout (none: minutes, here 5 s)."""
        limit = socket.getdefaulttimeout() if timeout is socket._GLOBAL_DEFAULT_TIMEOUT else timeout
        waits.append(limit)
        time.sleep(5 if limit is None else 0)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", unanswered)
    start = time.perf_counter()
    with pytest.raises(weights.WeightsUnavailableError, match=weights.MIRROR_VARIABLE) as raised:
        backbones.build("resnet32", weights="tinyimagenet")
    assert time.perf_counter() - start < 4 and waits and all(wait and wait <= 30 for wait in waits), waits
    assert "\n" not in str(raised.value) and "timed out" in str(raised.value)
    assert socket.getdefaulttimeout() is None  # the process-wide default is put back
