"""Noise draws: seeded standard-normal numbers that a sample receives whatever the batching.

Noise is drawn with numpy from ``SeedSequence([seed, stream, *key, block])`` in blocks of
samples along the value's sample (batch) axis — NOISE_BLOCK samples, fewer where a sample is
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
