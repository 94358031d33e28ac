"""Evaluation data: preprocessed model inputs ``x`` and integer labels ``y`` from ``.npz``.

Files are opened with ``allow_pickle=False``: an archive holding Python objects is refused,
never unpickled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError, WnError
from wn_onnx.io.safeio import NPZ_ERRORS, read_npz_member, regular_file


@dataclass
class Dataset:
    """Model-ready inputs and labels (``y`` is None for label-free use)."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int, pad: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Consecutive slices of ``size`` samples. ``pad``: the last one is filled up to ``size`` with
        copies of its last sample labelled -1 (for models with a fixed batch; scoring skips them)."""
        for start in range(0, len(self.x), size):
            stop = start + size
            x, y = self.x[start:stop], None if self.y is None else self.y[start:stop]
            if pad and len(x) < size:
                x = np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])
                y = None if y is None else np.concatenate([y.astype(np.int64), np.full(size - len(y), -1, np.int64)])
            yield x, y


LIMIT_MODES = ("stratified", "first")
LIMIT_SEED = 0  # the subset is the same whatever the noise --seed: runs with other seeds compare on the same samples


def subset(n: int, y: np.ndarray | None, limit: int | None, mode: str = "stratified") -> np.ndarray | None:
    """Indices of the ``limit`` of ``n`` samples to keep (in their original order), or None for all.

    ``stratified`` (with labels): every class keeps its share (largest-remainder rounding), the
    samples within a class drawn with a fixed seed — a test split sorted by class still gives every
    class. ``first``, or no labels: the first ``limit`` samples."""
    if limit is None:
        return None
    if limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")
    if mode not in LIMIT_MODES:
        raise DataError(f"--limit-mode must be one of {', '.join(LIMIT_MODES)}, not {mode!r}")
    if limit >= n:
        return None
    if y is None or mode == "first":
        return np.arange(limit)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = limit * counts / n
    quota = np.floor(share).astype(int)
    quota[np.argsort(-(share - quota), kind="stable")[: limit - int(quota.sum())]] += 1
    rng = np.random.default_rng(LIMIT_SEED)
    keep = [rng.permutation(np.flatnonzero(inverse == c))[:q] for c, q in enumerate(quota)]
    return np.sort(np.concatenate(keep))


def load_npz(
    path: str | Path, limit: int | None = None, require_labels: bool = True, limit_mode: str = "stratified"
) -> Dataset:
    """Read ``x`` (and ``y``) from an npz archive; check dtypes and finiteness. Declared sizes are
    checked against the memory budget before reading; with ``--limit-mode first`` only the first
    ``limit`` rows are read (a stratified subset needs every label, and rows from anywhere)."""
    p = regular_file(path, "data file")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")
    try:
        with zipfile.ZipFile(p) as archive:
            keys = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
            if "x" not in keys:
                raise DataError(f"{p}: no array named 'x' (found: {', '.join(sorted(keys)) or 'none'})")
            if limit is None or limit_mode == "first" or "y" not in keys:
                x = read_npz_member(archive, keys["x"], str(p), limit if limit_mode == "first" else None)
                y = read_npz_member(archive, keys["y"], str(p), limit if limit_mode == "first" else None) if "y" in keys else None
            else:  # a stratified subset: every label, then only the chosen rows of x
                y = read_npz_member(archive, keys["y"], str(p))
                labels = y.reshape(len(y), -1)[:, 0] if y.ndim in (1, 2) and len(y) else None
                keep = subset(len(labels), labels, limit, limit_mode) if labels is not None else None
                x = read_npz_member(archive, keys["x"], str(p), pick=keep)
                if keep is not None:
                    y, limit = y[keep], None  # already applied
    except WnError:
        raise
    except NPZ_ERRORS as err:
        why = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{p}: not a readable .npz archive ({why})") from None
    if require_labels and y is None:
        raise DataError(f"{p}: no array named 'y' with labels (use --label-free to score agreement instead)")
    return make_dataset(x, y, str(p), limit, limit_mode)


def make_dataset(
    x: np.ndarray, y: np.ndarray | None, source: str, limit: int | None = None, limit_mode: str = "stratified"
) -> Dataset:
    """Validate arrays and keep ``limit`` samples (see :func:`subset`)."""
    if x.dtype.kind not in "fiu":
        raise DataError(f"{source}: x has dtype {x.dtype}, expected numbers")
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"{source}: x holds no samples")
    if y is not None:
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{source}: labels y have dtype {y.dtype}, expected integers")
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise DataError(f"{source}: labels y have shape {y.shape}; expected one integer label per sample")
        y = y.reshape(-1).astype(np.int64)
        if len(y) != len(x):
            raise DataError(f"{source}: {len(x)} inputs but {len(y)} labels")
    keep = subset(len(x), y, limit, limit_mode)
    if keep is not None:
        x = x[keep]
        y = None if y is None else y[keep]
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x.reshape(len(x), -1)).any(axis=1)))
        raise DataError(f"{source}: {bad} input samples contain NaN or Inf")
    return Dataset(np.ascontiguousarray(x), y, source)


def check_shape(data: Dataset, input_shape: tuple, dtype: np.dtype) -> Dataset:
    """Match samples to the model's declared input shape; cast to the input dtype."""
    dtype = np.dtype(dtype)
    want = tuple(input_shape[1:])
    got = data.x.shape[1:]
    if len(want) != len(got) or any(isinstance(w, int) and w != g for w, g in zip(want, got, strict=False)):
        shown = "×".join(str(d) if isinstance(d, int) else "?" for d in want)
        raise DataError(
            f"{data.source}: samples have shape {'×'.join(map(str, got)) or 'scalar'}, the model expects {shown}"
        )
    if dtype.kind in "iu":  # token ids or raw pixels: a cast must not round or wrap anything
        info = np.iinfo(dtype)
        x = data.x
        if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise DataError(f"{data.source}: the model takes integers ({dtype}), but x holds fractional values")
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise DataError(f"{data.source}: x spans [{x.min()}, {x.max()}], outside the model's {dtype} input")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, in one line
        x = data.x.astype(dtype, copy=False)
    if dtype.kind == "f" and not np.all(np.isfinite(x)):  # float64 data beyond float32's range
        raise DataError(f"{data.source}: some inputs are NaN or overflow to Inf as {dtype} (the model's input type)")
    return Dataset(x, data.y, data.source)


def check_labels(data: Dataset, num_classes: int) -> None:
    """Labels must index the model's classes."""
    if data.y is not None:
        lo, hi = int(data.y.min()), int(data.y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(
                f"{data.source}: labels span [{lo}, {hi}] but the model has {num_classes} classes (0-{num_classes - 1})"
            )
