"""SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5, read by scipy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from wn_onnx.errors import DataError


def svhn(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels 0-9 (the files store digit 0 as 10)."""
    p = folder / f"{'test' if split == 'test' else 'train'}_32x32.mat"
    if not p.is_file():
        raise DataError(f"SVHN file {p.name} not found in {folder}")
    try:
        mat = loadmat(p)
    except (ValueError, OSError, TypeError) as err:
        raise DataError(f"{p}: not a readable .mat file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{p}: expected arrays X and y")
    x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)
    y = mat["y"].reshape(-1).astype(np.int64) % 10
    if x.shape[1:] != (3, 32, 32) or len(x) != len(y):
        raise DataError(f"{p}: X {mat['X'].shape} and y {mat['y'].shape} are not 32×32×3×N and N×1")
    return x, y
