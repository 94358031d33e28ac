"""Reading and writing user-named files without surprises.

Inputs must be regular files of a bounded size (a FIFO, ``/dev/zero`` or a folder is refused
before anything is read); array containers are checked against a memory budget from their
declared sizes, before a byte of data is decompressed; outputs never overwrite an input.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wn_onnx.errors import DataError, WnError

TEXT_BYTES = 64 << 20  # configs, plans and reports are far smaller


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it names a regular file; one clear error otherwise (missing, folder, FIFO, device)."""
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise WnError(f"{what} not found: {p}") from None
    except (OSError, ValueError) as err:  # ENAMETOOLONG, ELOOP, a NUL byte
        raise WnError(f"{what} {str(p)[:200]!r} cannot be opened ({getattr(err, 'strerror', None) or err})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a pipe or a device"
        raise WnError(f"{what} {p} is not a file but {kind}")
    return p


def read_text(path: str | os.PathLike, what: str, max_bytes: int = TEXT_BYTES) -> str:
    """The UTF-8 text of a small regular file."""
    p = regular_file(path, what)
    try:
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as err:
        raise WnError(f"cannot read {what} {p}: {err.strerror or err}") from None
    if len(raw) > max_bytes:
        raise WnError(f"{what} {p} is larger than {max_bytes >> 20} MiB; not a wn-onnx file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WnError(f"{what} {p} is not UTF-8 text") from None


def memory_budget() -> int:
    """Bytes one array read may take: half the physical memory, or of the address-space limit."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        total = 8 << 30
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        total = min(total, soft)
    return total // 2


def check_budget(nbytes: int, source: str, images: int = 0) -> None:
    """``nbytes`` declared by ``source`` must fit the memory budget; ``images``: values that a
    dataset reader also copies to float32 for the model (counted: the copy is the larger part)."""
    budget = memory_budget()
    nbytes += images * np.dtype(np.float32).itemsize
    if nbytes > budget:
        raise DataError(
            f"{source}: declares {nbytes / 2**30:.3g} GiB of data, over the memory budget of {budget / 2**30:.3g} GiB"
        )


def npy_header(f, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from the header of an npy stream, which is left at the data;
    pickled objects are refused."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except (ValueError, EOFError) as err:
        raise DataError(f"{source} is not an npy array ({err})") from None
    if dtype.hasobject:
        raise DataError(f"{source} holds pickled Python objects; refusing to load it (save plain arrays)")
    return shape, fortran, dtype


def read_npz_member(
    archive: zipfile.ZipFile, name: str, source: str, limit: int | None = None, pick: np.ndarray | None = None
) -> np.ndarray:
    """Array ``name`` of an npz archive: the npy header's shape·itemsize is checked against the
    member's size and the memory budget first; with ``limit`` only the first rows are read, with
    ``pick`` (sorted row indices) only those rows are kept while the member streams past."""
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise DataError(f"{source}: member {name!r} is encrypted")
    with archive.open(info) as f:
        shape, fortran, dtype = npy_header(f, f"{source}: member {name!r}")
        count = int(np.prod(shape, dtype=object))
        declared = count * dtype.itemsize
        if declared > info.file_size:
            raise DataError(f"{source}: member {name!r} declares {declared} bytes but holds {info.file_size}")
        rows = shape[0] if shape else 1
        if pick is not None and shape and not fortran:
            return _pick_rows(f, shape, dtype, np.asarray(pick), source, name)
        if limit is not None and shape and not fortran:
            rows = min(rows, limit)
            shape = (rows, *shape[1:])
            count = int(np.prod(shape, dtype=object))
        check_budget(count * dtype.itemsize, source)
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise DataError(f"{source}: member {name!r} is truncated")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _pick_rows(f, shape: tuple, dtype: np.dtype, pick: np.ndarray, source: str, name: str) -> np.ndarray:
    """The rows ``pick`` of a C-ordered array streamed from ``f``, read in blocks of ≤ 16 MiB."""
    if len(pick) and int(pick[-1]) >= shape[0]:
        raise DataError(f"{source}: x has {shape[0]} rows, fewer than the labels")
    row = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
    check_budget((int(pick[-1]) + 1 if len(pick) else 0) * row, source)  # every row up to the last is inflated
    out = np.empty((len(pick), *shape[1:]), dtype)
    block = max(1, (16 << 20) // max(row, 1))
    done = 0
    for start in range(0, int(pick[-1]) + 1 if len(pick) else 0, block):
        n = min(block, shape[0] - start)
        data = f.read(n * row)
        if len(data) != n * row:
            raise DataError(f"{source}: member {name!r} is truncated")
        chunk = np.frombuffer(data, dtype=dtype).reshape((n, *shape[1:]))
        take = pick[(pick >= start) & (pick < start + n)]
        out[done : done + len(take)] = chunk[take - start]
        done += len(take)
    return out


NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError)


def unreadable(path: str | os.PathLike, err: Exception) -> DataError:
    """The one-line error for an array file that zipfile, zlib or numpy cannot read (NPZ_ERRORS)."""
    why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    kind = ".npy file" if str(path).endswith(".npy") else ".npz archive"
    return DataError(f"{path}: not a readable {kind} ({why})")


def guard_outputs(outputs: Iterable[Path | None], inputs: Iterable[Path | str | None]) -> None:
    """Refuse an output path that names one of the inputs (a report written over the model), or an
    array file inside an input folder (a streamed data folder reads every .npy / .npz in it)."""

    def same(a: Path, b: Path) -> bool:
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except (OSError, ValueError):
            return False

    def inside(a: Path, folder: Path) -> bool:  # an array file written into a folder read as data (streamed shards)
        try:
            return a.suffix in (".npy", ".npz") and folder.is_dir() and a.resolve().is_relative_to(folder.resolve())
        except (OSError, ValueError):
            return False

    sources = [Path(i) for i in inputs if i is not None]
    for out in outputs:
        if out is None:
            continue
        hit = next((s for s in sources if same(Path(out), s)), None)
        if hit is not None:
            raise WnError(f"output {out} is the input {hit}; choose another output path")
        folder = next((s for s in sources if inside(Path(out), s)), None)
        if folder is not None:
            raise WnError(f"output {out} lies in the input folder {folder}; choose another output path")


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a reader never sees half a report."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file beside ``path``, then a rename); errors are one line."""
    tmp = path.with_name(path.name[:200] + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WnError(f"cannot write {path}: {e.strerror or e}") from None
