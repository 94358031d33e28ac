"""SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5, read by scipy)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from scipy.io import loadmat, whosmat

from wn_onnx.errors import DataError
from wn_onnx.io.safeio import check_budget

# bytes per element of the MATLAB classes whosmat names (others count as 8)
MAT_ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "single": 4}
MAT_ERRORS = (ValueError, OSError, TypeError, EOFError, zlib.error)


def svhn(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels 0-9 (the files store digit 0 as 10)."""
    p = folder / f"{'test' if split == 'test' else 'train'}_32x32.mat"
    if not p.is_file():
        raise DataError(f"SVHN file {p.name} not found in {folder}")
    try:  # the variables' declared sizes, read from their headers (a compressed one is not inflated)
        declared = {name: (shape, cls) for name, shape, cls in whosmat(p)}
    except MAT_ERRORS as err:
        raise DataError(f"{p}: not a readable .mat file ({err})") from None
    if "X" not in declared or "y" not in declared:
        raise DataError(f"{p}: expected arrays X and y")
    sizes = [int(np.prod(declared[n][0], dtype=object)) * MAT_ITEMSIZE.get(declared[n][1], 8) for n in ("X", "y")]
    check_budget(sum(sizes), str(p), images=sizes[0])
    try:
        mat = loadmat(p, variable_names=["X", "y"])
    except MAT_ERRORS as err:
        raise DataError(f"{p}: not a readable .mat file ({err})") from None
    except MemoryError:  # a data element longer than its declared dimensions
        raise DataError(f"{p}: holds more data than its dimensions declare, beyond the memory available") from None
    x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)
    y = mat["y"].reshape(-1).astype(np.int64) % 10
    if x.shape[1:] != (3, 32, 32) or len(x) != len(y):
        raise DataError(f"{p}: X {mat['X'].shape} and y {mat['y'].shape} are not 32×32×3×N and N×1")
    return x, y
