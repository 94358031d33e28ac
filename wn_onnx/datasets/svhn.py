"""SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5, read by scipy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from wn_onnx.errors import WnError


def svhn(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels 0-9 (the files store digit 0 as 10)."""
    p = folder / f"{'test' if split == 'test' else 'train'}_32x32.mat"
    if not p.is_file():
        raise WnError(f"SVHN file {p.name} not found in {folder}")
    try:
        mat = loadmat(p)
    except (ValueError, OSError, TypeError) as err:
        raise WnError(f"{p}: not a readable .mat file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise WnError(f"{p}: expected arrays X and y")
    x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)
    y = mat["y"].reshape(-1).astype(np.int64) % 10
    if x.shape[1:] != (3, 32, 32) or len(x) != len(y):
        raise WnError(f"{p}: X {mat['X'].shape} and y {mat['y'].shape} are not 32×32×3×N and N×1")
    return x, y
