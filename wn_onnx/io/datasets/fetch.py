"""``wn-onnx data fetch NAME``: download the official files and verify their checksums.

A file whose checksum does not match is deleted and reported; archives are unpacked with
tarfile's ``data`` filter (no absolute paths, no links out of the target folder).
"""

from __future__ import annotations

import hashlib
import http.client
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wn_onnx.errors import WnError
from wn_onnx.io.datasets import cache_dir


@dataclass(frozen=True)
class Resource:
    url: str
    algorithm: str  # "md5" or "sha256"
    digest: str
    unpack: bool = False  # a tar.gz to extract into the dataset folder
    max_bytes: int = 0  # no official file is larger: a longer stream is stopped there (0: no cap)


_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
RESOURCES: dict[str, list[Resource]] = {
    "fashion-mnist": [
        Resource(
            _FMNIST + "train-images-idx3-ubyte.gz", "md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", max_bytes=26_421_880
        ),
        Resource(_FMNIST + "train-labels-idx1-ubyte.gz", "md5", "25c81989df183df01b3e8a0aad5dffbe", max_bytes=29_515),
        Resource(_FMNIST + "t10k-images-idx3-ubyte.gz", "md5", "bef4ecab320f06d8554ea6380940ec79", max_bytes=4_422_102),
        Resource(_FMNIST + "t10k-labels-idx1-ubyte.gz", "md5", "bb300cfdad3c16e7a12a480ee83cd310", max_bytes=5_148),
    ],
    "mnist": [
        Resource(_MNIST + "train-images-idx3-ubyte.gz", "md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873", max_bytes=9_912_422),
        Resource(_MNIST + "train-labels-idx1-ubyte.gz", "md5", "d53e105ee54ea40749a09fcbcd1e9432", max_bytes=28_881),
        Resource(_MNIST + "t10k-images-idx3-ubyte.gz", "md5", "9fb629c4189551a2d022fa330f9573f3", max_bytes=1_648_877),
        Resource(_MNIST + "t10k-labels-idx1-ubyte.gz", "md5", "ec29112dd5afa0611ce80d1b7f02629c", max_bytes=4_542),
    ],
    "cifar10": [
        Resource(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "md5",
            "c32a1d4ab5d03f1284b67883e8d87530",
            True,
            max_bytes=163 << 20,
        )
    ],
    "svhn": [
        Resource(
            "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            "md5",
            "e26dedcc434d2e4c54c9b2d4a06d8373",
            max_bytes=183 << 20,
        ),
        Resource(
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "md5",
            "eb5a983be6a315427106f1b164d9cef3",
            max_bytes=65 << 20,
        ),
    ],
    "speech-commands": [
        Resource(
            "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
            "sha256",
            "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
            True,
            max_bytes=2400 << 20,
        )
    ],
}


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(res: Resource, target: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch ``res`` into folder ``target`` (kept if already there and verified). The stream is
    cut at ``res.max_bytes``, and an unfinished download leaves no ``.part`` file behind."""
    if target.exists() and not target.is_dir():
        raise WnError(f"fetch target {target} is a file, not a folder")
    target.mkdir(parents=True, exist_ok=True)
    path = target / res.url.rsplit("/", 1)[-1]
    if not (path.is_file() and file_digest(path, res.algorithm) == res.digest):
        partial = path.with_name(path.name + ".part")
        try:
            _stream(res, partial, progress)
        except BaseException as err:  # Ctrl-C, a cut connection, a refused size: nothing half-written stays
            partial.unlink(missing_ok=True)
            if isinstance(err, OSError | http.client.HTTPException):
                raise WnError(f"download of {res.url} failed: {err or type(err).__name__}") from None
            raise
        got = file_digest(partial, res.algorithm)
        if got != res.digest:
            partial.unlink(missing_ok=True)
            raise WnError(f"{res.url}: {res.algorithm} {got} does not match the official {res.digest}; file discarded")
        partial.replace(path)
    if res.unpack:
        try:
            with tarfile.open(path) as tar:
                tar.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise WnError(f"{path}: cannot unpack ({err})") from None
    return path


def _stream(res: Resource, partial: Path, progress: Callable[[int, int], None] | None) -> None:
    too_big = f"{res.url}: the server sends more than the official file's {res.max_bytes} bytes; download stopped"
    with urllib.request.urlopen(res.url, timeout=60) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        if res.max_bytes and total > res.max_bytes:
            raise WnError(too_big)
        done = 0
        for chunk in iter(lambda: response.read(1 << 20), b""):
            done += len(chunk)
            if res.max_bytes and done > res.max_bytes:
                raise WnError(too_big)
            out.write(chunk)
            if progress:
                progress(done, total)


def fetch(name: str, target: Path | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download dataset ``name`` into ``target`` (default: the wn-onnx cache folder)."""
    if name not in RESOURCES:
        raise WnError(f"no download for {name!r}; downloadable: {', '.join(RESOURCES)}")
    folder = Path(target) if target else cache_dir(name)
    for res in RESOURCES[name]:
        download(res, folder, progress)
    if name == "cifar10" and (folder / "cifar-10-batches-bin").is_dir():
        return folder / "cifar-10-batches-bin"
    return folder
