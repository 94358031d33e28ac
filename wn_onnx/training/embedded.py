"""Regenerates the embedded default (wn_onnx/io/embedded.py): the digits MLP with BatchNorm and its test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wn_onnx.io.embedded import ASSETS, CLASS_NAMES, DEFAULT_DATA, DEFAULT_MODEL, MEAN, STD, digits_split


def build(out_dir: Path = ASSETS, epochs: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """Train the default model and write it with its test split; returns (model, data) paths."""
    from wn_onnx.training.export import export_onnx
    from wn_onnx.training.trainer import TrainConfig, train

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
