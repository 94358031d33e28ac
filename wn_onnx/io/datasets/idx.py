"""MNIST / Fashion-MNIST: IDX files, gzip-compressed or raw."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError
from wn_onnx.io.safeio import check_budget, regular_file

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, limit: int | None = None) -> np.ndarray:
    """An IDX file (MNIST / Fashion-MNIST format), gzip-compressed or raw. The header's size is
    checked against the memory budget before the data is decompressed; ``limit``: first rows only."""
    p = regular_file(path, "IDX file")
    try:
        with p.open("rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if gz else open)(p, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(f"{p}: not an IDX file (bad magic number)")
            dims_raw = f.read(4 * head[3])
            dims = tuple(int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(len(dims_raw) // 4))
            if len(dims) != head[3]:
                raise DataError(f"{p}: truncated IDX header")
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            if limit is not None and dims:
                dims = (min(dims[0], limit), *dims[1:])
            count = int(np.prod(dims, dtype=object)) if dims else 0
            check_budget(count * dtype.itemsize, str(p), images=count)
            data = f.read(count * dtype.itemsize)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{p}: corrupt gzip archive ({err})") from None
    if len(data) != count * dtype.itemsize:
        raise DataError(f"{p}: truncated IDX file ({len(data)} bytes of data, header says {count * dtype.itemsize})")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(dims)


def find_idx(folder: Path, stem: str) -> Path:
    """``stem`` (e.g. ``t10k-images-idx3-ubyte``) in ``folder``, gzipped or raw."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{stem}[.gz] not found in {folder}")


def idx_pair(folder: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels of the ``train`` or ``test`` split in ``folder``."""
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(find_idx(folder, f"{prefix}-images-idx3-ubyte"), limit)
    labels = read_idx(find_idx(folder, f"{prefix}-labels-idx1-ubyte"), limit)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return images, labels.astype(np.int64)
