"""The paper's datasets from the files users already have, normalised as the reference does.

No torchvision/torchaudio: ``digits`` (scikit-learn, embedded), ``mnist`` / ``fashion-mnist`` (IDX),
``cifar10`` (binary or python batches), ``svhn`` (.mat), ``speech-commands`` (WAV folders, MFCC)
and ``npz`` (arrays x, y used as they are).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError
from wn_onnx.io.data import subset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: list[str]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # RandomCrop(pad 4) + horizontal flip while training (docs/reference.md)
    system_dirs: tuple[str, ...] = field(default=())
    splits: tuple[str, ...] = ("train", "test")

    @property
    def val_split(self) -> str:
        return "validation" if "validation" in self.splits else "test"


IMAGE_10 = [str(i) for i in range(10)]
FASHION = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", IMAGE_10, (1, 8, 8), (0.5,), (0.5,), False),
    "mnist": DatasetInfo("mnist", IMAGE_10, (1, 28, 28), (0.5,), (0.5,), True, ("/usr/share/datasets/mnist",)),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", FASHION, (1, 28, 28), (0.5,), (0.5,), True, ("/usr/share/datasets/fashion-mnist",)
    ),
    "cifar10": DatasetInfo("cifar10", [], (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True),
    "svhn": DatasetInfo("svhn", IMAGE_10, (3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True),
    "speech-commands": DatasetInfo(
        "speech-commands", [], (1, 49, 10), (0.0,), (1.0,), False, (), ("train", "validation", "test")
    ),
    "npz": DatasetInfo("npz", [], (), (), (), False),
}


@dataclass
class Split:
    """Model-ready float32 inputs (normalised), int64 labels, and where they came from."""

    x: np.ndarray
    y: np.ndarray
    info: DatasetInfo
    source: str


def cache_dir(name: str) -> Path:
    """Where ``wn-onnx data fetch NAME`` puts files (and where loaders look by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "wn-onnx" / name


def _folder(info: DatasetInfo, data_dir: Path | None) -> Path:
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"dataset folder {data_dir} is not a folder")
        return Path(data_dir)
    candidates = [*map(Path, info.system_dirs), cache_dir(info.name)]
    for c in candidates:
        if c.is_dir():
            return c
    raise DataError(
        f"{info.name} files not found (looked in {', '.join(map(str, candidates))}); "
        f"pass --data-dir or run `wn-onnx data fetch {info.name}`"
    )


def normalise(images: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """uint8 images (N, C, H, W) → float32 (x/255 − mean)/std per channel."""
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are refused by load_split
        x = images.astype(np.float32) / 255.0
    mean = np.asarray(info.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


def load_split(
    name: str,
    split: str,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    limit: int | None = None,
    limit_mode: str = "stratified",
) -> Split:
    """One split of dataset ``name``, ready for the model (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    if split not in info.splits and name != "npz":
        raise DataError(f"{name} has splits {', '.join(info.splits)}, not {split!r}")
    if name == "digits":
        from wn_onnx.io.embedded import digits_split

        x_train, y_train, x_test, y_test = digits_split()
        x, y, source = (
            (x_train, y_train, "scikit-learn digits (train)")
            if split == "train"
            else (x_test, y_test, "scikit-learn digits (test)")
        )
    elif name == "npz":
        from wn_onnx.io.data import load_npz

        if data_file is None:
            raise DataError("the npz dataset needs a data file (FILE.npz)")
        d = load_npz(data_file)
        x, y, source = d.x, d.y, str(data_file)
        info = DatasetInfo("npz", [str(i) for i in range(int(y.max()) + 1)], tuple(x.shape[1:]), (), (), False)
    else:
        folder = _folder(info, data_dir)
        source = str(folder)
        if name in ("mnist", "fashion-mnist"):
            from wn_onnx.io.datasets.idx import idx_pair

            images, y = idx_pair(folder, split, limit)
            x = normalise(images[:, None], info)
        elif name == "cifar10":
            from wn_onnx.io.datasets.cifar import CLASSES, cifar10

            images, y = cifar10(folder, split, limit if limit_mode == "first" else None)
            x, info = normalise(images, info), DatasetInfo(**{**info.__dict__, "classes": CLASSES})
        elif name == "svhn":
            from wn_onnx.io.datasets.svhn import svhn

            images, y = svhn(folder, split)
            x = normalise(images, info)
        else:
            from wn_onnx.io.datasets.speech_commands import CLASSES, speech_commands

            x, y = speech_commands(folder, split)
            info = DatasetInfo(**{**info.__dict__, "classes": CLASSES})
    keep = subset(len(x), y, limit, limit_mode)
    if keep is not None:
        x, y = x[keep], y[keep]
    if len(x) == 0:
        raise DataError(f"{name} {split}: no samples")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, in one line
        x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} {split} ({source}): inputs hold NaN or values beyond float32's range")
    if y.min() < 0:
        raise DataError(f"{name} {split} ({source}): labels must be >= 0, found {int(y.min())}")
    return Split(x, y.astype(np.int64), info, source)


def _normalization(raw: str, info: DatasetInfo, channels: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's ``wn_onnx.normalization`` metadata (the dataset's values where it gives none):
    per-channel mean and std, finite, std > 0."""
    try:
        norm = json.loads(raw)
        mean = np.asarray(norm.get("mean") or info.mean, np.float64)
        std = np.asarray(norm.get("std") or info.std, np.float64)
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise DataError(f"{source}: metadata wn_onnx.normalization is not {{'mean': [...], 'std': [...]}}") from None
    ok = mean.ndim == std.ndim == 1 and len(mean) == len(std) and len(mean) in (1, channels)
    if not ok or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise DataError(
            f"{source}: metadata wn_onnx.normalization needs finite mean and std (std > 0), one value or one per "
            f"channel ({channels}); got {raw[:200]!r}"
        )
    return mean, std


def model_ready(
    model, name: str, split: str | None, data_dir: Path | None, limit: int | None, limit_mode: str = "stratified"
):
    """A dataset split preprocessed the way ``model`` (an onnx_ir model) was trained: the
    normalisation in its ``wn_onnx.normalization`` metadata replaces the dataset default."""
    from wn_onnx.io.data import Dataset

    info = DATASETS.get(name)
    chosen = split or (info.val_split if info else "test")
    data = load_split(name, chosen, data_dir, limit=limit, limit_mode=limit_mode)
    raw = model.metadata_props.get("wn_onnx.normalization")
    if raw and data.info.mean:
        shape = (1, -1, *([1] * (data.x.ndim - 2)))
        norm = _normalization(raw, data.info, data.x.shape[1], "the model")
        mean_m, std_m = (a.astype(np.float32).reshape(shape) for a in norm)
        mean_d = np.asarray(data.info.mean, np.float32).reshape(shape)
        std_d = np.asarray(data.info.std, np.float32).reshape(shape)
        with np.errstate(over="ignore", invalid="ignore"):
            data.x = ((data.x * std_d + mean_d) - mean_m) / std_m
        if not np.all(np.isfinite(data.x)):
            raise DataError(f"{name}: the model's normalization makes some inputs NaN or Inf")
    return Dataset(data.x.astype(np.float32), data.y, f"{name} {chosen} ({data.source})")
