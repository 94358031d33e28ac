"""Evaluation data: preprocessed model inputs and integer labels ``y`` from ``.npz``.

The inputs are one array ``x`` (a model with one input) or one array per graph input, named as
the input (README "Inputs"); inputs that are not data (a recurrent state, a sample rate, a mask)
may be fed a constant instead (``--feed NAME=VALUE``). Files are opened with
``allow_pickle=False``: an archive holding Python objects is refused, never unpickled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError, WnError
from wn_onnx.io.safeio import NPZ_ERRORS, read_npz_member, regular_file


@dataclass(frozen=True)
class Inputs:
    """The inputs of some samples for a model with several inputs (or fed constants): per-sample
    arrays, samples on axis 0 here and moved to the input's batch axis (``axes``) when fed, and
    values fed unchanged to every run (``fixed``). Indexed and measured like an array of samples."""

    arrays: dict[str, np.ndarray]
    axes: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, rows: slice | np.ndarray) -> Inputs:
        return Inputs({k: v[rows] for k, v in self.arrays.items()}, self.axes, self.fixed)

    def feeds(self) -> dict[str, np.ndarray]:
        moved = {k: np.ascontiguousarray(np.moveaxis(v, 0, self.axes.get(k, 0))) for k, v in self.arrays.items()}
        return {**moved, **self.fixed}


def feeds(x: np.ndarray | Inputs, name: str) -> dict[str, np.ndarray]:
    """What onnxruntime is fed for samples ``x``: an array is the single input ``name``."""
    return x.feeds() if isinstance(x, Inputs) else {name: x}


@dataclass
class Dataset:
    """Model-ready inputs and labels (``y`` is None for label-free use; samples on axis 0)."""

    x: np.ndarray | Inputs
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int, pad: bool = False) -> Iterator[tuple[np.ndarray | Inputs, np.ndarray | None, int]]:
        """(inputs, labels, samples) of consecutive slices of ``size`` samples. ``pad``: the last
        inputs are filled up to ``size`` with copies of its last sample (for models with a fixed
        batch; only the first ``samples`` rows are scored, and have labels)."""
        for start in range(0, len(self.x), size):
            stop = min(start + size, len(self.x))
            x, y = self.x[start:stop], None if self.y is None else self.y[start:stop]
            if pad and stop - start < size:
                x = self.x[np.minimum(np.arange(start, start + size), stop - 1)]
            yield x, y, stop - start


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
    path: str | Path,
    limit: int | None = None,
    require_labels: bool = True,
    limit_mode: str = "stratified",
    names: tuple[str, ...] | None = None,
) -> Dataset:
    """Read the inputs (and ``y``) from an npz archive; check dtypes and finiteness. ``names``:
    the graph inputs to read, one array each named as the input (one input may also be ``x``);
    None: the array ``x`` alone. Declared sizes are checked against the memory budget before
    reading; with ``--limit-mode first`` only the first ``limit`` rows are read (a stratified
    subset needs every label, and rows from anywhere)."""
    p = regular_file(path, "data file")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")
    try:
        with zipfile.ZipFile(p) as archive:
            keys = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
            members = _input_members(keys, names, p)
            first = limit if limit_mode == "first" else None
            keep = None
            if limit is not None and limit_mode != "first" and "y" in keys:  # a stratified subset
                y = read_npz_member(archive, keys["y"], str(p))
                labels = y.reshape(len(y), -1)[:, 0] if (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)) and len(y) else None
                keep = subset(len(labels), labels, limit, limit_mode) if labels is not None else None
                if keep is not None:
                    y, limit = y[keep], None  # already applied
            else:
                y = read_npz_member(archive, keys["y"], str(p), first) if "y" in keys else None
            arrays = {
                name: read_npz_member(archive, member, str(p), None if keep is not None else first, pick=keep)
                for name, member in members.items()
            }
    except WnError:
        raise
    except NPZ_ERRORS as err:
        why = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{p}: not a readable .npz archive ({why})") from None
    if require_labels and y is None:
        raise DataError(f"{p}: no array named 'y' with labels (use --label-free to score agreement instead)")
    x = arrays["x"] if names is None else Inputs(arrays)
    return make_dataset(x, y, str(p), limit, limit_mode)


def data_inputs(loaded, fed: dict) -> tuple[str, ...] | None:
    """The inputs of ``loaded`` (a LoadedModel) the data file must hold, those not ``fed``; None:
    the model's one input, read from ``x``."""
    return None if len(loaded.inputs) == 1 and not fed else tuple(n for n in loaded.inputs if n not in fed)


def _input_members(keys: dict[str, str], names: tuple[str, ...] | None, p: Path) -> dict[str, str]:
    """input name → npz member holding its samples."""
    found = ", ".join(sorted(keys)) or "none"
    if names is None:
        if "x" not in keys:
            raise DataError(f"{p}: no array named 'x' (found: {found})")
        return {"x": keys["x"]}
    if len(names) == 1 and names[0] not in keys and "x" in keys:
        return {names[0]: keys["x"]}
    missing = [n for n in names if n not in keys]
    if missing:
        raise DataError(
            f"{p}: no array named {missing[0]!r} for the model's input {missing[0]!r} (found: {found}); "
            f"add it, or give it a constant with --feed {missing[0]}=VALUE"
        )
    return {n: keys[n] for n in names}


def make_dataset(
    x: np.ndarray | Inputs, y: np.ndarray | None, source: str, limit: int | None = None, limit_mode: str = "stratified"
) -> Dataset:
    """Validate arrays and keep ``limit`` samples (see :func:`subset`). Labels are integers, one
    row per sample (their shape is the metric's business, see wn_onnx.metrics)."""
    arrays = x.arrays if isinstance(x, Inputs) else {"x": x}
    lengths = {name: len(a) if a.ndim else 0 for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise DataError(f"{source}: {name} has dtype {a.dtype}, expected numbers")
        if a.ndim < 1 or len(a) == 0:
            raise DataError(f"{source}: {name} holds no samples")
    if len(set(lengths.values())) > 1:
        raise DataError(f"{source}: the inputs hold different numbers of samples ({', '.join(f'{k}: {v}' for k, v in lengths.items())})")
    n = len(x)
    if y is not None:
        if y.dtype.kind not in "iub":
            if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{source}: labels y have dtype {y.dtype}, expected integers")
        if y.ndim < 1:
            raise DataError(f"{source}: labels y are a scalar; expected one row per sample")
        y = (y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y).astype(np.int64)
        if len(y) != n:
            raise DataError(f"{source}: {n} inputs but {len(y)} labels")
    flat = y if y is not None and y.ndim == 1 else None  # one class per sample: a stratified subset keeps every class
    keep = subset(n, flat, limit, limit_mode)
    if keep is not None:
        x = x[keep]
        y = None if y is None else y[keep]
    for name, a in (x.arrays if isinstance(x, Inputs) else {"x": x}).items():
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(np.sum(~np.isfinite(a.reshape(len(a), -1)).any(axis=1)))
            raise DataError(f"{source}: {bad} input samples{'' if name == 'x' else f' of {name}'} contain NaN or Inf")
    if isinstance(x, Inputs):
        return Dataset(Inputs({k: np.ascontiguousarray(v) for k, v in x.arrays.items()}, x.axes, x.fixed), y, source)
    return Dataset(np.ascontiguousarray(x), y, source)


def _cast(a: np.ndarray, dtype: np.dtype, source: str, name: str) -> np.ndarray:
    """``a`` (array ``name`` of ``source``) as the input's ``dtype``; a cast must not round, wrap
    or overflow anything."""
    if dtype.kind in "iu":  # token ids, raw pixels, a sample rate
        info = np.iinfo(dtype)
        if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
            raise DataError(f"{source}: the model takes integers ({dtype}), but {name} holds fractional values")
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise DataError(f"{source}: {name} spans [{a.min()}, {a.max()}], outside the model's {dtype} input")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, in one line
        out = a.astype(dtype, copy=False)
    if dtype.kind == "f" and not np.all(np.isfinite(out)):  # float64 data beyond float32's range
        raise DataError(f"{source}: some inputs are NaN or overflow to Inf as {dtype} (the model's input type)")
    return out


def _shown(shape: tuple) -> str:
    return "×".join(str(d) if isinstance(d, int) else "?" for d in shape) or "scalar"


def _fits(want: tuple, got: tuple) -> bool:
    return len(want) == len(got) and all(not isinstance(w, int) or w == g for w, g in zip(want, got, strict=True))


def batch_axis(shape: tuple, batch: str | int | None) -> int | None:
    """The axis of an input of declared ``shape`` that holds the samples: the one named as the
    first input's batch axis (``batch``, a symbolic name), else None."""
    if not isinstance(batch, str):
        return None
    return next((i for i, d in enumerate(shape) if d == batch), None)


def check_shape(data: Dataset, loaded, fed: dict[str, np.ndarray] | None = None) -> Dataset:
    """Match samples to the declared inputs of ``loaded`` (a LoadedModel) and cast them to their
    types; ``fed``: constants for other inputs (``--feed``), repeated over the batch where the
    input has a batch axis, else fed as they are. Checked data passes unchanged."""
    fed = {**(data.x.fixed if isinstance(data.x, Inputs) else {}), **(fed or {})}
    inputs = loaded.inputs
    unknown = [n for n in fed if n not in inputs]
    if unknown:
        raise DataError(f"--feed {unknown[0]}: the model has no input {unknown[0]!r} (inputs: {', '.join(inputs)})")
    if not isinstance(data.x, Inputs) and len(inputs) == 1 and not fed:  # one input: the array x
        shape, dtype = inputs[loaded.input_name]
        if not _fits(tuple(shape[1:]), data.x.shape[1:]):
            raise DataError(f"{data.source}: samples have shape {_shown(data.x.shape[1:])}, the model expects {_shown(shape[1:])}")
        return Dataset(_cast(data.x, dtype, data.source, "x"), data.y, data.source)
    arrays = data.x.arrays if isinstance(data.x, Inputs) else {loaded.input_name: data.x}
    missing = [n for n in inputs if n not in arrays and n not in fed]
    if missing:
        raise DataError(
            f"{data.source}: nothing for the model's input {missing[0]!r} (inputs: {', '.join(inputs)}): "
            f"an array named {missing[0]!r} in the data, or --feed {missing[0]}=VALUE"
        )
    batch = loaded.input_shape[0] if loaded.input_shape else None
    out, axes, fixed, n = {}, {}, {}, len(data.x)
    for name, (shape, dtype) in inputs.items():
        axis = batch_axis(shape, batch)
        if name in arrays:
            a, axis = arrays[name], 0 if axis is None else axis
            per_sample = tuple(d for i, d in enumerate(shape) if i != axis)
            if not _fits(per_sample, a.shape[1:]):
                raise DataError(
                    f"{data.source}: samples of {name!r} have shape {_shown(a.shape[1:])}, the model expects {_shown(per_sample)}"
                )
            out[name], axes[name] = _cast(a, np.dtype(dtype), data.source, name), axis
            continue
        value = _cast(np.asarray(fed[name]), np.dtype(dtype), f"--feed {name}", "the value")
        if axis is None:  # the same for every run: shaped as declared where the declaration is complete
            fixed[name] = _broadcast(value, shape, name)
        else:  # one sample's value, repeated over the batch (a view: no copy until a batch is fed)
            one = np.expand_dims(value, axis) if value.ndim == len(shape) - 1 else value
            full = _broadcast(one, tuple(1 if i == axis else d for i, d in enumerate(shape)), name)
            out[name] = np.broadcast_to(np.moveaxis(full, axis, 0), (n, *np.moveaxis(full, axis, 0).shape[1:]))
            axes[name] = axis
    return Dataset(Inputs(out, axes, fixed), data.y, data.source)


def _broadcast(value: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """``value`` broadcast to the declared ``shape`` (unnamed lengths from ``value``)."""
    if value.ndim > len(shape):
        raise DataError(f"--feed {name}: a value of shape {_shown(value.shape)} for an input of shape {_shown(shape)}")
    value = value.reshape((1,) * (len(shape) - value.ndim) + value.shape)
    target = tuple(d if isinstance(d, int) else v for d, v in zip(shape, value.shape, strict=True))
    try:
        return np.array(np.broadcast_to(value, target))  # a copy (ascontiguousarray would make a scalar 1-d)
    except ValueError:
        raise DataError(f"--feed {name}: a value of shape {_shown(value.shape)} does not fit the input's shape {_shown(shape)}") from None


def parse_feeds(items: list[str] | None) -> dict[str, np.ndarray]:
    """``--feed NAME=VALUE`` options: VALUE a number or a .npy file (a constant for input NAME)."""
    fed: dict[str, np.ndarray] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise DataError(f"--feed {item!r}: use NAME=NUMBER or NAME=FILE.npy")
        if value.endswith(".npy"):
            p = regular_file(value, f"--feed {name} file")
            try:
                fed[name] = np.load(p, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise DataError(f"--feed {name}: {p} is not a readable .npy array ({str(err).splitlines()[0][:200]})") from None
        else:
            try:
                number = float(value)
            except ValueError:
                raise DataError(f"--feed {item!r}: {value!r} is neither a number nor a .npy file") from None
            fed[name] = np.asarray(int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number)
    return fed
