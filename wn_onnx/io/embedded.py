"""The embedded default: an MLP with BatchNorm trained on scikit-learn's bundled 8×8 digits.

``wn-onnx scan`` without a model scans it on the held-out digits, no download needed. The two
files ship in ``assets/``; :func:`build` regenerates them (``python -m wn_onnx.training.embedded``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "digits_mlp_bn.onnx"
DEFAULT_DATA = ASSETS / "digits_test.npz"
CLASS_NAMES = [str(i) for i in range(10)]
MEAN, STD = 0.5, 0.5  # on pixels scaled to [0, 1]: x/16


def digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as (N, 1, 8, 8) float32 normalised like FashionMNIST: (x − 0.5)/0.5."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = ((digits.images.astype(np.float32) / 16.0 - MEAN) / STD)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
