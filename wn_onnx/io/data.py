"""Evaluation data: preprocessed model inputs and integer labels ``y``.

The inputs are one array ``x`` (a model with one input) or one array per graph input, named as
the input (docs/guide.md "Inputs"); inputs that are not data (a recurrent state, a sample rate, a mask)
may be fed a constant instead (``--feed NAME=VALUE``). From one ``.npz`` (read whole), or
streamed so that the inputs never have to fit in memory (:class:`Rows`, docs/guide.md "Memory"): a
``.npy`` memory-mapped one batch at a time (labels from a second ``.npy``), a folder holding
``x.npy`` (or one ``<input name>.npy`` per input) and ``y.npy``, or a folder of ``.npz`` shards
read one shard at a time. Files are opened with ``allow_pickle=False``: an archive holding
Python objects is refused, never unpickled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError, WnError
from wn_onnx.io.safeio import NPZ_ERRORS, check_budget, npy_header, read_npz_member, regular_file, unreadable

BLOCK_BYTES = 64 << 20  # rows read at once when streamed data is checked or hashed


@dataclass(frozen=True)
class Part:
    """One file of streamed inputs: a ``.npy`` read in place, or member ``member`` of an ``.npz`` shard."""

    path: str
    member: str | None
    rows: int


class Rows:
    """Inputs read from files on demand, in the order of ``parts`` (rows ``pick`` of them, when
    given; cast to ``cast``): a ``.npy`` is memory-mapped for one read and unmapped after, so
    its pages do not stay in the process; an ``.npz`` shard is read whole, one at a time.
    Indexing with a slice or an index array returns an ordinary array."""

    def __init__(self, parts: list[Part], tail: tuple[int, ...], dtype: np.dtype,
                 pick: np.ndarray | None = None, cast: np.dtype | None = None) -> None:  # fmt: skip
        self.parts, self.tail, self.stored, self.pick, self.cast = parts, tail, np.dtype(dtype), pick, cast
        self.bounds = np.cumsum([0] + [p.rows for p in parts])
        self._shard: tuple[int, np.ndarray] | None = None  # the last shard read

    def __getstate__(self) -> dict:  # sent to workers without the shard in memory
        return {**self.__dict__, "_shard": None}

    def __len__(self) -> int:
        return int(self.bounds[-1]) if self.pick is None else len(self.pick)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.tail)

    @property
    def ndim(self) -> int:
        return 1 + len(self.tail)

    @property
    def dtype(self) -> np.dtype:
        return self.cast or self.stored

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.tail, dtype=np.int64)) * self.dtype.itemsize

    def take(self, rows: np.ndarray) -> Rows:
        """Rows ``rows`` of these (a subset, still read on demand)."""
        rows = np.asarray(rows, np.int64)
        return Rows(self.parts, self.tail, self.stored, rows if self.pick is None else self.pick[rows], self.cast)

    def astype(self, dtype, copy: bool = False) -> Rows:
        """These rows, cast to ``dtype`` as they are read."""
        return Rows(self.parts, self.tail, self.stored, self.pick, np.dtype(dtype))

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key, np.int64)
        if self.pick is not None:
            rows = self.pick[rows]
        out = np.empty((len(rows), *self.tail), self.dtype)
        which = np.searchsorted(self.bounds, rows, side="right") - 1
        for k in np.unique(which):
            at = np.flatnonzero(which == k)
            out[at] = self._read(int(k), rows[at] - self.bounds[k])
        return out

    def _read(self, k: int, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` of part ``k``; a file changed since it was checked (truncated, replaced)
        is a DataError, which ends the scan: never a point marked ``failed``."""
        part = self.parts[k]
        try:
            if part.member is None:
                mapped = np.load(part.path, mmap_mode="r", allow_pickle=False)
                if mapped.shape[0] != part.rows or mapped.shape[1:] != self.tail:
                    raise DataError(f"{part.path}: changed while it was read (now {mapped.shape[0]} rows)")
                contiguous = len(local) > 0 and bool(np.all(np.diff(local) == 1))  # a slice reads faster; any order else
                return np.array(mapped[local[0] : local[-1] + 1] if contiguous else mapped[local])
            if self._shard is None or self._shard[0] != k:
                self._shard = None  # the previous shard goes first
                with zipfile.ZipFile(part.path) as archive:
                    self._shard = (k, read_npz_member(archive, part.member, part.path))
                if len(self._shard[1]) != part.rows or self._shard[1].shape[1:] != self.tail:
                    raise DataError(f"{part.path}: changed while it was read (now {len(self._shard[1])} rows)")
            return self._shard[1][local]
        except NPZ_ERRORS as err:
            raise unreadable(part.path, err) from None

    def blocks(self) -> Iterator[np.ndarray]:
        """All rows, in blocks of about BLOCK_BYTES."""
        step = max(1, BLOCK_BYTES // max(1, self.nbytes // max(len(self), 1)))
        for start in range(0, len(self), step):
            yield self[start : start + step]

    def hash_into(self, h) -> None:
        """Feed the rows' contents to hash ``h`` as :func:`wn_onnx.results.store.digest` does an array's."""
        h.update(str((self.dtype.str, self.shape)).encode())
        for block in self.blocks():
            h.update(np.ascontiguousarray(block).tobytes())


def blocks(x: np.ndarray | Rows) -> Iterator[np.ndarray]:
    """``x`` in blocks: an array whole, streamed rows as they are read."""
    if isinstance(x, Rows):
        yield from x.blocks()
    else:
        yield x


@dataclass(frozen=True)
class Inputs:
    """The inputs of some samples for a model with several inputs (or fed constants): per-sample
    arrays, samples on axis 0 here and moved to the input's batch axis (``axes``) when fed, and
    values fed unchanged to every run (``fixed``); ``fed``: the inputs given a constant (``--feed``,
    in ``fixed`` or repeated over the batch in ``arrays``). Indexed and measured like an array of samples."""

    arrays: dict[str, np.ndarray]
    axes: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    fed: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, rows: slice | np.ndarray) -> Inputs:
        return replace(self, arrays={k: v[rows] for k, v in self.arrays.items()})

    def constants(self) -> dict[str, np.ndarray]:
        """The value of each fed input (one sample's, for an input repeated over the batch)."""
        return {n: self.fixed[n] if n in self.fixed else self.arrays[n][0] for n in self.fed}

    def feeds(self) -> dict[str, np.ndarray]:
        moved = {k: np.ascontiguousarray(np.moveaxis(v, 0, self.axes.get(k, 0))) for k, v in self.arrays.items()}
        return {**moved, **self.fixed}


def feeds(x: np.ndarray | Inputs, name: str) -> dict[str, np.ndarray]:
    """What onnxruntime is fed for samples ``x``: an array is the single input ``name``."""
    return x.feeds() if isinstance(x, Inputs) else {name: x}


@dataclass
class Dataset:
    """Model-ready inputs and labels (``y`` is None for label-free use; samples on axis 0)."""

    x: np.ndarray | Inputs | Rows
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
        raise DataError(f"the sample limit must be >= 1, got {limit}")
    if mode not in LIMIT_MODES:
        raise DataError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, not {mode!r}")
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
    fed: tuple[str, ...] = (),
) -> Dataset:
    """Read the inputs (and ``y``) from an npz archive; check dtypes and finiteness. ``names``:
    the graph inputs to read, one array each named as the input (one input may also be ``x``);
    None: the array ``x`` alone; ``fed``: inputs given a constant, which the archive must not hold. Declared sizes are checked against the memory budget before
    reading; with ``--limit-mode first`` only the first ``limit`` rows are read (a stratified
    subset needs every label, and rows from anywhere)."""
    p = regular_file(path, "data file")
    if limit is not None and limit < 1:
        raise DataError(f"the sample limit must be >= 1, got {limit}")
    try:
        with zipfile.ZipFile(p) as archive:
            keys = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
            members = _input_members(keys, names, p, fed)
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
        raise unreadable(p, err) from None
    if require_labels and y is None:
        raise DataError(f"{p}: no array named 'y' with labels (score agreement with the clean model instead: label-free)")
    x = arrays["x"] if names is None else Inputs(arrays)
    return make_dataset(x, y, str(p), limit, limit_mode)


def data_inputs(loaded, fed: dict) -> tuple[str, ...] | None:
    """The inputs of ``loaded`` (a LoadedModel) the data file must hold, those not ``fed``; None:
    the model's one input, read from ``x``. Samples come from the data: not every input may be fed."""
    if fed and all(n in fed for n in loaded.inputs):
        raise DataError(f"--feed gives every input of the model a constant ({', '.join(loaded.inputs)}); the samples "
                        "of at least one input come from the data")  # fmt: skip
    return None if len(loaded.inputs) == 1 and not fed else tuple(n for n in loaded.inputs if n not in fed)


def fed_twice(name: str, source: str) -> DataError:
    """An input given both by the data and by ``--feed``: never one of them silently."""
    return DataError(f"feed {name}: {source} holds the input {name!r} too; give it once (its array or --feed)")


def _input_members(keys: dict[str, str], names: tuple[str, ...] | None, p: Path, fed: tuple[str, ...]) -> dict[str, str]:
    """input name → npz member holding its samples (none of them ``fed``)."""
    clash = [n for n in fed if n in keys]
    if clash:
        raise fed_twice(clash[0], str(p))
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
            f"{p}: no array for the model's input{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(found: {found}); add {'them' if len(missing) > 1 else 'it'}, or give constants with "
            f"{' '.join(f'--feed {n}=VALUE' for n in missing)}"
        )
    return {n: keys[n] for n in names}


def make_dataset(
    x: np.ndarray | Inputs | Rows, y: np.ndarray | None, source: str, limit: int | None = None, limit_mode: str = "stratified"
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
        if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{source}: labels y reach {int(y.max())}, beyond the class indices of any model")
        y = (y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y).astype(np.int64)
        if len(y) != n:
            raise DataError(f"{source}: {n} inputs but {len(y)} labels")
    flat = y if y is not None and y.ndim == 1 else None  # one class per sample: a stratified subset keeps every class
    keep = subset(n, flat, limit, limit_mode)
    if keep is not None:
        pick = lambda a: a.take(keep) if isinstance(a, Rows) else a[keep]  # noqa: E731  (streamed rows stay streamed)
        x = replace(x, arrays={k: pick(v) for k, v in x.arrays.items()}) if isinstance(x, Inputs) else pick(x)
        y = None if y is None else y[keep]
    for name, a in (x.arrays if isinstance(x, Inputs) else {"x": x}).items():
        bad = sum(int(np.sum(~np.isfinite(b.reshape(len(b), -1)).all(axis=1))) for b in blocks(a)) if a.dtype.kind == "f" else 0
        if bad:
            raise DataError(f"{source}: {bad} input samples{'' if name == 'x' else f' of {name}'} contain NaN or Inf")
    whole = lambda a: a if isinstance(a, Rows) else np.ascontiguousarray(a)  # noqa: E731
    if isinstance(x, Inputs):
        return Dataset(replace(x, arrays={k: whole(v) for k, v in x.arrays.items()}), y, source)
    return Dataset(whole(x), y, source)


def _cast(a: np.ndarray | Rows, dtype: np.dtype, source: str, name: str) -> np.ndarray | Rows:
    """``a`` (array ``name`` of ``source``) as the input's ``dtype``; a cast must not round, wrap
    or overflow anything. Streamed rows are checked block by block and cast as batches are read."""
    if isinstance(a, Rows):
        for block in a.blocks() if a.dtype != dtype else ():
            _cast(block, dtype, source, name)
        return a.astype(dtype)
    if dtype.kind in "iu":  # token ids, raw pixels, a sample rate
        info = np.iinfo(dtype)
        if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
            raise DataError(f"{source}: the model takes integers ({dtype}), but {name} holds fractional values")
        if a.size and (a.min() < info.min or a.max() >= info.max + 1):  # + 1: exact for float data too
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
    first input's batch axis (``batch``, a symbolic name); else, when that batch is free, the
    input's only unnamed free dimension (declared ≤ 0 or without a name: a state [2, 0, 128]);
    else None."""
    if isinstance(batch, int):
        return None
    named = next((i for i, d in enumerate(shape) if isinstance(batch, str) and d == batch), None)
    unnamed = [i for i, d in enumerate(shape) if d is None]
    return named if named is not None else (unnamed[0] if len(unnamed) == 1 else None)


def check_shape(data: Dataset, loaded, fed: dict[str, np.ndarray] | None = None) -> Dataset:
    """Match samples to the declared inputs of ``loaded`` (a LoadedModel) and cast them to their
    types; ``fed``: constants for other inputs (``--feed``), repeated over the batch where the
    input has a batch axis, else fed as they are. Checked data passes unchanged."""
    arrays = data.x.arrays if isinstance(data.x, Inputs) else {loaded.input_name: data.x}
    clash = [n for n in fed or {} if n in arrays]
    if clash:
        raise fed_twice(clash[0], data.source)
    earlier = data.x.fed if isinstance(data.x, Inputs) else ()  # checked data passes unchanged
    fed = {**(data.x.fixed if isinstance(data.x, Inputs) else {}), **(fed or {})}
    inputs = loaded.inputs
    unknown = [n for n in fed if n not in inputs]
    if unknown:
        raise DataError(f"feed {unknown[0]}: the model has no input {unknown[0]!r} (inputs: {', '.join(inputs)})")
    if not isinstance(data.x, Inputs) and len(inputs) == 1 and not fed:  # one input: the array x
        shape, dtype = inputs[loaded.input_name]
        if not _fits(tuple(shape[1:]), data.x.shape[1:]):
            raise DataError(f"{data.source}: samples have shape {_shown(data.x.shape[1:])}, the model expects {_shown(shape[1:])}")
        return Dataset(_cast(data.x, dtype, data.source, "x"), data.y, data.source)
    missing = [n for n in inputs if n not in arrays and n not in fed]
    if missing:
        raise DataError(
            f"{data.source}: nothing for the model's input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))} (inputs: {', '.join(inputs)}): an array of that name in the data, "
            f"or {' '.join(f'--feed {n}=VALUE' for n in missing)}"
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
    return Dataset(Inputs(out, axes, fixed, tuple(n for n in inputs if n in fed or n in earlier)), data.y, data.source)


def _broadcast(value: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """``value`` broadcast to the declared ``shape`` (unnamed lengths from ``value``)."""
    if value.ndim > len(shape):
        raise DataError(f"feed {name}: a value of shape {_shown(value.shape)} for an input of shape {_shown(shape)}")
    value = value.reshape((1,) * (len(shape) - value.ndim) + value.shape)
    target = tuple(d if isinstance(d, int) else v for d, v in zip(shape, value.shape, strict=True))
    try:
        return np.array(np.broadcast_to(value, target))  # a copy (ascontiguousarray would make a scalar 1-d)
    except ValueError:
        raise DataError(f"feed {name}: a value of shape {_shown(value.shape)} does not fit the input's shape {_shown(shape)}") from None


def parse_feeds(items: list[str] | None) -> dict[str, np.ndarray]:
    """``--feed NAME=VALUE`` options: VALUE a number or a .npy file (a constant for input NAME)."""
    fed: dict[str, np.ndarray] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise DataError(f"feed {item!r}: use NAME=NUMBER or NAME=FILE.npy")
        if name in fed:
            raise DataError(f"feed {name} is given twice; give each input one value")
        if value.endswith(".npy"):
            fed[name] = _whole_npy(regular_file(value, f"--feed {name} file"), f"feed {name}")
            continue
        try:
            number: int | float = int(value)  # exact: a 64-bit bound is checked on the integer itself
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise DataError(f"feed {item!r}: {value!r} is neither a number nor a .npy file") from None
        if isinstance(number, int) and not -(2**63) <= number < 2**64:
            raise DataError(f"feed {name}: {value} is beyond 64-bit integers")
        fed[name] = np.asarray(number)
    return fed


def load_streamed(
    path: str | Path, labels: str | Path | None = None, limit: int | None = None, require_labels: bool = True,
    limit_mode: str = "stratified", names: tuple[str, ...] | None = None, fed: tuple[str, ...] = (),
) -> Dataset:  # fmt: skip
    """Inputs read on demand (:class:`Rows`) from a ``.npy`` file (labels from ``labels``, a
    ``.npy``), or a folder of ``x.npy`` — or one ``<name>.npy`` per graph input of ``names`` —
    and ``y.npy``, or a folder of ``.npz`` shards (each with ``x`` and ``y``, in file-name order)."""
    p = Path(path)
    y, y_path = None, labels
    clash = [n for n in fed if p.is_dir() and (p / f"{n}.npy").is_file()]
    if clash:
        raise fed_twice(clash[0], str(p))
    named = {n: p / f"{n}.npy" for n in names or () if p.is_dir() and (p / f"{n}.npy").is_file()}
    if not p.is_dir():
        x = _npy_rows(regular_file(p, "data file"))
    elif len(named) > 1:  # one file per graph input
        x = Inputs({n: _npy_rows(f) for n, f in named.items()})
    elif named or (p / "x.npy").is_file():
        x = _npy_rows(next(iter(named.values()), p / "x.npy"))
    elif shards := sorted(p.glob("*.npz")):
        if labels is not None:
            raise DataError("separate labels go with .npy inputs; .npz shards carry their own y")
        x, y = _shard_rows(shards), _shard_labels(shards)
    else:
        raise DataError(f"{p}: no x.npy, no <input name>.npy and no .npz shards in this folder")
    if p.is_dir() and labels is None and (p / "y.npy").is_file():
        y_path = p / "y.npy"
    if y_path is not None:
        y = _whole_npy(regular_file(y_path, "labels file"), "labels y")
    if require_labels and y is None:
        raise DataError(f"{p}: no labels (give them as a .npy of integers, or score label-free: agreement with the clean model)")
    return make_dataset(x, y, str(p), limit, limit_mode)


def _npy_header_at(path: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, bytes of data) of a ``.npy`` file of numbers (``what`` it holds),
    its declared size checked against the file's."""
    try:
        with path.open("rb") as f:
            shape, fortran, dtype = npy_header(f, str(path))
            offset = f.tell()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if dtype.kind not in "fiub":
        raise DataError(f"{path}: {what} has dtype {dtype}, expected numbers")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if path.stat().st_size < offset + declared:
        raise DataError(f"{path}: declares {declared} bytes of data but holds fewer (truncated?)")
    return shape, fortran, dtype, declared


def _npy_rows(path: Path) -> Rows:
    shape, fortran, dtype, _ = _npy_header_at(path, "x")
    if fortran or not shape:  # rows are read in place, one batch at a time
        raise DataError(f"{path}: store the samples in C order along the first axis (np.save of a C-contiguous array)")
    return Rows([Part(str(path), None, shape[0])], tuple(shape[1:]), dtype)


def _whole_npy(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` read whole (labels, a fed constant): its declared size is checked against the
    file and the memory budget before a byte of data is read."""
    check_budget(_npy_header_at(path, what)[3], str(path))
    try:
        return np.load(path, allow_pickle=False)
    except NPZ_ERRORS as err:
        raise unreadable(path, err) from None


def _member_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{name}.npy" not in archive.namelist():
                raise DataError(f"{path}: no array named {name!r}")
            with archive.open(f"{name}.npy") as f:
                shape, _, dtype = npy_header(f, f"{path}: member '{name}.npy'")
    except WnError:
        raise
    except NPZ_ERRORS as err:
        raise unreadable(path, err) from None
    return shape, dtype


def _shard_rows(shards: list[Path]) -> Rows:
    heads = [_member_header(s, "x") for s in shards]
    (shape, dtype), tails = heads[0], {h[0][1:] for h in heads}
    if len(tails) > 1 or len({h[1] for h in heads}) > 1:
        raise DataError(f"{shards[0].parent}: the shards' x differ in sample shape or dtype")
    return Rows([Part(str(s), "x.npy", h[0][0]) for s, h in zip(shards, heads, strict=True)], tuple(shape[1:]), dtype)


def _shard_labels(shards: list[Path]) -> np.ndarray | None:
    """Every shard's y (labels are small), or None when no shard has one."""
    found = []
    for s in shards:
        try:
            with zipfile.ZipFile(s) as archive:
                found.append(read_npz_member(archive, "y.npy", str(s)) if "y.npy" in archive.namelist() else None)
        except WnError:
            raise
        except NPZ_ERRORS as err:
            raise unreadable(s, err) from None
    if all(f is None for f in found):
        return None
    if any(f is None for f in found):
        raise DataError(f"{shards[0].parent}: some shards have labels y and some do not")
    return np.concatenate(found)
