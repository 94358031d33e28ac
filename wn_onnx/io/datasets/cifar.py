"""CIFAR-10: the binary release (``cifar-10-batches-bin``) or the python release through a
restricted unpickler that builds plain arrays, lists and dicts and nothing else."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError
from wn_onnx.io.safeio import check_budget

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
    check_budget(path.stat().st_size, str(path), images=path.stat().st_size)
    try:
        return PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a plain-data CIFAR pickle ({err})") from None


def _files(folder: Path, names: list[str]) -> list[Path]:
    """The batch files, all there, their sizes within the memory budget together."""
    paths = [folder / name for name in names]
    for p in paths:
        if not p.is_file():
            raise DataError(f"CIFAR-10 file {p.name} not found in {folder}")
    check_budget(sum(p.stat().st_size for p in paths), str(folder), images=sum(p.stat().st_size for p in paths))
    return paths


def _binary(folder: Path, names: list[str], first: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``first``: read the first records only (--limit-mode first)."""
    chunks, left = [], first
    for p in _files(folder, names):
        size = p.stat().st_size
        if size % RECORD:
            raise DataError(f"{p}: size {size} is not a multiple of the {RECORD}-byte CIFAR-10 record")
        raw = np.fromfile(p, dtype=np.uint8, count=-1 if left is None else min(size, left * RECORD))
        chunks.append(raw.reshape(-1, RECORD))
        if left is not None:
            left -= len(chunks[-1])
            if left <= 0:
                break
    records = np.concatenate(chunks)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _python(folder: Path, names: list[str], first: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Each batch must hold what the release holds — ``data`` a uint8 array of N×3072, ``labels``
    N integers — checked before any array is built from it: a pickle's lists may repeat one
    object by reference, so a small file can describe a huge nested list."""
    xs, ys = [], []
    for p in _files(folder, names):
        batch = load_plain_pickle(p)
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise DataError(f"{p}: expected a dict with b'data' and b'labels'")
        data, labels = batch[b"data"], batch[b"labels"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % (RECORD - 1):
            raise DataError(f"{p}: b'data' is not a uint8 array of 3072 values per image")
        rows = data.size // (RECORD - 1)
        if not isinstance(labels, list | np.ndarray) or len(labels) != rows:
            raise DataError(f"{p}: b'labels' is not a list of {rows} labels, one per image")
        if isinstance(labels, list) and not all(type(v) is int for v in labels):
            raise DataError(f"{p}: b'labels' holds something other than integers")
        if isinstance(labels, np.ndarray) and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
            raise DataError(f"{p}: b'labels' holds something other than integers")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
        if first is not None and sum(map(len, ys)) >= first:
            break
    return np.concatenate(xs), np.concatenate(ys)


def cifar10(folder: Path, split: str, first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels; the folder may hold either release (or the
    ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` folder the archives unpack to). The files'
    sizes are checked against the memory budget before they are read; ``first``: at least the
    first ``first`` images are read, later batches are not."""
    for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
        if (folder / sub).is_dir() and not any(folder.glob("*_batch*")):
            folder = folder / sub
            break
    if (folder / "test_batch.bin").is_file() or (folder / "data_batch_1.bin").is_file():
        names = ["test_batch.bin"] if split == "test" else [f"data_batch_{i}.bin" for i in range(1, 6)]
        x, y = _binary(folder, names, first)
    elif (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        x, y = _python(folder, names, first)
    else:
        raise DataError(f"no CIFAR-10 batches (test_batch[.bin], data_batch_N[.bin]) in {folder}")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{folder}: CIFAR-10 labels outside 0-9")
    return x, y
