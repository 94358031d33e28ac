"""Noise draws: seeded standard-normal numbers that a sample receives whatever the batching.

Walks (noise at one point at a time) read one stream for every point: sample i of repeat r has
its own generator, ``SeedSequence([seed, WALK_STREAM, r, i])``, and a point whose value holds m
numbers per sample takes that stream's first m (mixed noise: the next m for its second array).
A sample's numbers at a point therefore do not depend on which other points are walked, and one
draw of the widest point's numbers serves every point (:class:`WalkDraws` keeps it within the
memory budget). A value without a sample axis takes the first numbers of one generator per
batch, ``[seed, WALK_STREAM, r, PER_BATCH, batch]``.

Every other stream (global noise, plans, weights, …) is drawn with numpy from
``SeedSequence([seed, stream, *key, block])`` in blocks of samples along the value's sample (batch) axis — NOISE_BLOCK samples, fewer where a sample is
large, so that a block holds at most BLOCK_ELEMENTS numbers (a fixed size per value) — float32
from PCG64 (numpy's fastest normal path), filled in place; a block is always drawn whole (mixed
noise draws two arrays from one stream, so a partial block would shift the second): the numbers
a sample receives do not depend on the batch size, the batch order or the number of threads,
and a small batch of large samples draws little more than it uses. A value
whose sample axis is unknown (heads folded into the batch, shapes the probe cannot explain)
gets one draw per batch instead, keyed by the batch number.
"""

from __future__ import annotations

import numpy as np

WALK_STREAM, GLOBAL_STREAM, PLAN_STREAM, ORDER_STREAM = 0, 1, 2, 3  # ORDER: the sequential estimator's sample order
WEIGHT_STREAM = 4  # weight noise: one draw per (point, repeat), whatever the batching (engine.weights)
CONVERTER_STREAM = 5  # analog layers' output noise, per sample like activation noise (engine.weights)
READ_STREAM = 6  # per-sample read noise of weights read for every input (engine.weights)
NOISE_BLOCK = 256  # samples per noise generator (at most)
BLOCK_ELEMENTS = 1 << 20  # numbers per noise generator (at most, unless one sample holds more)
PER_BATCH = 1 << 31  # key marker of draws made per batch (no sample axis)


def draw(
    seed: int, stream: int, key: tuple[int, ...], shape: tuple[int, ...], count: int, dtype, first: int | np.ndarray
) -> list[np.ndarray]:
    """``count`` standard-normal arrays of ``shape`` for samples ``first…first+shape[0]-1``, or for
    the samples whose indices ``first`` lists (any order, repeats allowed: the sequential
    estimator's subsets get what a contiguous batch gives those samples), the sample axis first;
    each block of samples (NOISE_BLOCK, fewer where they would pass BLOCK_ELEMENTS numbers) from
    its own generator."""
    n = shape[0] if shape else 0
    size = max(1, min(NOISE_BLOCK, BLOCK_ELEMENTS // max(1, int(np.prod(shape[1:], dtype=np.int64)))))
    out = [np.empty(shape, np.float32) for _ in range(count)]
    if not np.isscalar(first):  # listed samples: draw every block they touch whole, take their rows
        rows = np.asarray(first, np.int64)
        for block in np.unique(rows // size):
            rng = np.random.default_rng([seed, stream, *key, int(block)])
            mine = np.flatnonzero(rows // size == block)
            for arr in out:
                arr[mine] = rng.standard_normal((size, *shape[1:]), dtype=np.float32)[rows[mine] % size]
        return [a.astype(dtype, copy=False) for a in out]
    for start in range(first - first % size, first + n, size):
        rng = np.random.default_rng([seed, stream, *key, start // size])
        lo, hi = max(start, first), min(start + size, first + n)
        for arr in out:
            if lo == start and hi == start + size:  # a whole block: draw in place
                rng.standard_normal(dtype=np.float32, out=arr[lo - first : hi - first])
            else:  # the whole block: a later array of this key continues the stream after it
                block = rng.standard_normal((size, *shape[1:]), dtype=np.float32)
                arr[lo - first : hi - first] = block[lo - start : hi - start]
    return [a.astype(dtype, copy=False) for a in out]


def draw_at(
    seed: int,
    stream: int,
    key: tuple[int, ...],
    shape: tuple[int, ...],
    axis: int | None,
    count: int,
    dtype,
    first: int | np.ndarray,
    batch: int,
) -> list[np.ndarray]:
    """:func:`draw` for a value of ``shape`` whose samples lie on ``axis``; with ``axis`` None,
    one draw for the whole value of batch number ``batch`` (then results depend on the batching)."""
    if axis is None:
        rng = np.random.default_rng([seed, stream, *key, PER_BATCH, batch])
        return [rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False) for _ in range(count)]
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return [np.moveaxis(a, 0, axis) for a in draw(seed, stream, key, moved, count, dtype, first)]


def walk_rows(seed: int, key: tuple[int, ...], samples: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` numbers of the walk stream ``key`` (the repeat; and the σ index with
    ``--redraw``) of each sample ``samples`` lists, one row a sample: one generator per sample, so
    that a narrower point's numbers are a prefix of a wider one's whatever the batch."""
    out = np.empty((len(samples), width), np.float32)
    for row, sample in zip(out, samples, strict=True):
        np.random.default_rng([seed, WALK_STREAM, *key, int(sample)]).standard_normal(dtype=np.float32, out=row)
    return out


class WalkDraws:
    """Walk-stream rows of whole batches, or of single samples (the sequential estimator's trials,
    which every point takes in an order of its own), kept for the walks of every point while they
    fit ``room`` bytes (beyond that drawn again for each point: the same numbers); each is drawn
    ``width`` numbers a sample wide (the widest point to be walked) so that a later, narrower point
    takes its numbers from them."""

    def __init__(self, width: int, room: int) -> None:
        self.width, self.room = width, room
        self.kept: dict[tuple[int, tuple[int, ...], int], np.ndarray] = {}  # (seed, key, first sample) → rows
        self.single: dict[tuple[int, tuple[int, ...]], dict[int, np.ndarray]] = {}  # (seed, key) → sample → row

    def listed(self, seed: int, key: tuple[int, ...], samples: np.ndarray, width: int) -> np.ndarray:
        """The first ``width`` numbers of each sample ``samples`` lists (:func:`walk_rows`), those
        drawn before taken from the kept rows."""
        table = self.single.setdefault((seed, key), {})
        rows = {s: row for s in dict.fromkeys(samples.tolist()) if (row := table.get(s)) is not None and len(row) >= width}
        missing = np.array([s for s in dict.fromkeys(samples.tolist()) if s not in rows], np.int64)
        if missing.size:
            wide = max(width, self.width)
            keep = missing.size * wide * 4 <= self.room  # else only what this point needs, not kept
            fresh = walk_rows(seed, key, missing, wide if keep else width)
            if keep:
                fresh.flags.writeable = False  # handed out to every point
                self.room -= fresh.nbytes
            for s, row in zip(missing.tolist(), fresh, strict=True):
                rows[s] = row
                if keep:
                    table[s] = row
        return np.stack([rows[s][:width] for s in samples.tolist()])

    def rows(self, seed: int, key: tuple[int, ...], first: int, n: int, width: int) -> np.ndarray:
        """Samples ``first…first+n-1``'s first ``width`` numbers (:func:`walk_rows`), from a kept
        draw that covers them when there is one."""
        for (s, k, start), rows in self.kept.items():
            if (s, k) == (seed, key) and start <= first and first + n <= start + len(rows) and rows.shape[1] >= width:
                return rows[first - start : first - start + n, :width]
        wide = max(width, self.width)
        if n * wide * 4 > self.room:
            return walk_rows(seed, key, np.arange(first, first + n), width)
        rows = walk_rows(seed, key, np.arange(first, first + n), wide)
        rows.flags.writeable = False  # handed out to every point as views
        self.kept[(seed, key, first)] = rows
        self.room -= rows.nbytes
        return rows[:, :width]


def walk_draw(
    seed: int,
    key: tuple[int, ...],
    shape: tuple[int, ...],
    axis: int | None,
    count: int,
    dtype,
    first: int | np.ndarray,
    batch: int,
    kept: WalkDraws | None = None,
) -> list[np.ndarray]:
    """The ``count`` arrays of ``shape`` that walk stream ``key`` gives a value whose samples lie
    on ``axis`` (samples ``first…``, or those ``first`` lists; ``kept``: rows kept for every
    point), each sample's numbers in the value's order; with ``axis`` None, from one generator
    for batch number ``batch``."""
    if axis is None:
        size = int(np.prod(shape, dtype=np.int64))
        rng = np.random.default_rng([seed, WALK_STREAM, *key, PER_BATCH, batch])
        flat = rng.standard_normal(count * size, dtype=np.float32)
        return [flat[c * size : (c + 1) * size].reshape(shape).astype(dtype, copy=False) for c in range(count)]
    n, inner = shape[axis], (*shape[:axis], *shape[axis + 1 :])
    per = int(np.prod(inner, dtype=np.int64))
    if kept is not None and np.isscalar(first):
        rows = kept.rows(seed, key, int(first), n, count * per)
    elif kept is not None:
        rows = kept.listed(seed, key, np.asarray(first, np.int64), count * per)
    else:
        samples = np.asarray(first, np.int64) if not np.isscalar(first) else np.arange(first, first + n)
        rows = walk_rows(seed, key, samples, count * per)
    parts = (rows[:, c * per : (c + 1) * per].reshape((n, *inner)) for c in range(count))
    return [np.moveaxis(part, 0, axis).astype(dtype, copy=False) for part in parts]
