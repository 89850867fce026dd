"""Named pretrained weights: where they come from, the local mirror, download and cache, and their errors.

Reading the files is `keras_l2t.networks.weight_formats` (Keras, rcmalli h5, PyTorch state dicts) and
`keras_l2t.networks.torch_checkpoint` (PyTorch checkpoints without PyTorch). Keras loads only when a file is downloaded,
so that the checkpoint reader can run without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket


class WeightsError(ValueError):
    """A weights file that does not fit the architecture it is loaded into."""


class WeightsUnavailableError(RuntimeError):
    """Named pretrained weights that cannot be downloaded (for example when offline)."""


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a backbone's named pretrained weights come from.

    Args:
        url: the official download address.
        file_name: the name of the cached file.
        sha256: the file's SHA-256, checked after download (None to skip).
        description: what the weights were trained on, and their licence.

    """

    url: str
    file_name: str
    sha256: str | None
    description: str


def keras_cache_path(file_name: str) -> str:
    """Where Keras caches a downloaded weights file (`$KERAS_HOME/models`, by default `~/.keras/models`).

    Args:
        file_name: the file's name.

    Returns:
        The full path.

    """
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models", file_name)


MIRROR_VARIABLE = "KERAS_L2T_WEIGHTS_DIR"
# seconds a download may wait to connect or for its next bytes; offline machines whose packets vanish
# otherwise wait minutes for the system's TCP timeout
NETWORK_TIMEOUT = 15.0


def offline_hint(backbone: str, source: WeightSource, error: Exception | str) -> str:
    """The message for named weights that could not be downloaded.

    Args:
        backbone: the backbone's name.
        source: where the weights come from.
        error: the download error.

    Returns:
        A message that says how to pass a local file instead.

    """
    return (
        f"Could not download the pretrained weights of {backbone!r} from {source.url} ({error}). "
        f"If this machine is offline, download the file elsewhere and pass its local path instead, "
        f"e.g. weights='/path/to/{source.file_name}', copy it to {keras_cache_path(source.file_name)}, or list "
        f"its folder in the {MIRROR_VARIABLE} environment variable."
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_in_mirror(source: WeightSource) -> str | None:
    """Find a named weights file in the local folders listed in `$KERAS_L2T_WEIGHTS_DIR` (os.pathsep-separated).

    A file matches by its name (then its checksum must agree) or, when the source has a SHA-256, by content
    under any name: an offline machine can point the variable at a folder of already downloaded weights.

    Args:
        source: the file's name and checksum.

    Returns:
        The path of the matching file, or None.

    Raises:
        WeightsError: a file of the right name whose checksum differs.

    """
    for folder in filter(None, os.environ.get(MIRROR_VARIABLE, "").split(os.pathsep)):
        named = os.path.join(folder, source.file_name)
        if os.path.isfile(named):
            if source.sha256 and _sha256(named) != source.sha256:
                raise WeightsError(f"{named} does not have the expected SHA-256 {source.sha256}.")
            return named
        if source.sha256 and os.path.isdir(folder):
            for entry in sorted(os.scandir(folder), key=lambda item: item.name):
                if entry.is_file() and _sha256(entry.path) == source.sha256:
                    return entry.path
    return None


def download(source: WeightSource, backbone: str) -> str:
    """Find a named weights file in the local mirror (`find_in_mirror`), or download it into the Keras cache.

    The download's sockets time out after `NETWORK_TIMEOUT` seconds without progress, so that an offline machine
    gets a `WeightsUnavailableError` (saying where to put the file) in seconds, not after minutes.

    Args:
        source: the file's address, name and checksum.
        backbone: the backbone's name, for error messages.

    Returns:
        The local path of the file.

    Raises:
        WeightsUnavailableError: the file is not in the mirror or the cache and cannot be downloaded.

    """
    mirrored = find_in_mirror(source)
    if mirrored:
        return mirrored
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT)  # urllib (under Keras) takes no timeout; its sockets take this one
    try:
        return keras.utils.get_file(source.file_name, source.url, file_hash=source.sha256, cache_subdir="models")
    except Exception as error:  # keras raises a bare Exception on a failed fetch
        raise WeightsUnavailableError(offline_hint(backbone, source, error)) from error
    finally:
        socket.setdefaulttimeout(previous)
