"""The embedded default: an MLP with BatchNorm trained on scikit-learn's bundled 8×8 digits.

``wn-onnx scan`` without a model scans it on the held-out digits, no download needed. The two
files ship in ``assets/``; :func:`build` regenerates them (``python -m wn_onnx.models.embedded``).
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


def build(out_dir: Path = ASSETS, epochs: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """Train the default model and write it with its test split; returns (model, data) paths."""
    from wn_onnx.models.export import export_onnx
    from wn_onnx.training import TrainConfig, train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_split(seed=seed)
    cfg = TrainConfig("mlp", "digits", bn=True, epochs=epochs, seed=seed, augment=False)
    net, _ = train(cfg, (x_train, y_train), (x_test, y_test), 10, (1, 8, 8))
    meta = {"arch": "mlp", "dataset": "digits", "bn": True, "class_names": CLASS_NAMES,
            "normalization": {"mean": [MEAN], "std": [STD], "scale": 1 / 16}, "training_noise": None}  # fmt: skip
    model_path = export_onnx(net, (1, 8, 8), out_dir / DEFAULT_MODEL.name, meta)
    data_path = out_dir / DEFAULT_DATA.name
    np.savez_compressed(data_path, x=x_test, y=y_test)
    return model_path, data_path


if __name__ == "__main__":
    for p in build():
        print(p)
