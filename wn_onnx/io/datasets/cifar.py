"""CIFAR-10: the binary release (``cifar-10-batches-bin``) or the python release through a
restricted unpickler that builds plain arrays, lists and dicts and nothing else."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RECORD = 1 + 3 * 32 * 32

# What numpy arrays need to unpickle; everything else is refused.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles arrays, lists, dicts, strings and numbers; refuses any other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_plain_pickle(path: Path):
    try:
        return PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a plain-data CIFAR pickle ({err})") from None


def _binary(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    chunks = []
    for name in names:
        p = folder / name
        if not p.is_file():
            raise DataError(f"CIFAR-10 file {name} not found in {folder}")
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size % RECORD:
            raise DataError(f"{p}: size {raw.size} is not a multiple of the {RECORD}-byte CIFAR-10 record")
        chunks.append(raw.reshape(-1, RECORD))
    records = np.concatenate(chunks)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _python(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        p = folder / name
        if not p.is_file():
            raise DataError(f"CIFAR-10 file {name} not found in {folder}")
        batch = load_plain_pickle(p)
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise DataError(f"{p}: expected a dict with b'data' and b'labels'")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels; the folder may hold either release (or the
    ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` folder the archives unpack to)."""
    for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
        if (folder / sub).is_dir() and not any(folder.glob("*_batch*")):
            folder = folder / sub
            break
    if (folder / "test_batch.bin").is_file() or (folder / "data_batch_1.bin").is_file():
        names = ["test_batch.bin"] if split == "test" else [f"data_batch_{i}.bin" for i in range(1, 6)]
        x, y = _binary(folder, names)
    elif (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        x, y = _python(folder, names)
    else:
        raise DataError(f"no CIFAR-10 batches (test_batch[.bin], data_batch_N[.bin]) in {folder}")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{folder}: CIFAR-10 labels outside 0-9")
    return x, y
