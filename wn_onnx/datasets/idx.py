"""MNIST / Fashion-MNIST: IDX files, gzip-compressed or raw."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from wn_onnx.errors import WnError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST / Fashion-MNIST format), gzip-compressed or raw."""
    p = Path(path)
    if not p.is_file():
        raise WnError(f"IDX file not found: {p}")
    raw = p.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise WnError(f"{p}: corrupt gzip archive ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise WnError(f"{p}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise WnError(
            f"{p}: truncated IDX file ({len(raw) - offset} bytes of data, header says {count * dtype.itemsize})"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def find_idx(folder: Path, stem: str) -> Path:
    """``stem`` (e.g. ``t10k-images-idx3-ubyte``) in ``folder``, gzipped or raw."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise WnError(f"{stem}[.gz] not found in {folder}")


def idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels of the ``train`` or ``test`` split in ``folder``."""
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(find_idx(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise WnError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return images, labels.astype(np.int64)
