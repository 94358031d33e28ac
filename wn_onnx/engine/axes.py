"""Where the samples of a batch lie in each value of a graph.

Not always on axis 0: an exported LSTM/GRU output Y is [seq, dir, N, H], attention inside a
TorchScript TransformerEncoder works on [L, N, E], and a dynamo export folds the heads into the
batch ([N·heads, L, d]: no axis holds the samples alone). The axis is found by a probe: the
same graph run on 2 and on 3 samples; the one axis whose length goes from 2 to 3 holds the
samples. Values with no such axis get None: their noise is drawn per batch and their σ values
are never stacked.
"""

from __future__ import annotations

import numpy as np

PROBE_SIZES = (2, 3)


def probe_batches(x: np.ndarray) -> list[np.ndarray]:
    """Batches of PROBE_SIZES samples taken (cyclically) from ``x``."""
    return [x[np.arange(n) % len(x)] for n in PROBE_SIZES]


def sample_axis(shapes: list[tuple[int, ...]]) -> int | None:
    """The axis of a value whose lengths, one shape per probe batch, follow the sample count."""
    small, large = shapes
    if len(small) != len(large):
        return None
    moved = [i for i, (a, b) in enumerate(zip(small, large, strict=True)) if a != b]
    if len(moved) == 1 and (small[moved[0]], large[moved[0]]) == PROBE_SIZES:
        return moved[0]
    return None


def fixed_sample_axis(shape: tuple[int, ...], batch: int) -> int | None:
    """For a model whose batch is built in (no other batch size can be probed): axis 0 when its
    length is that batch, else unknown."""
    return 0 if shape[:1] == (batch,) else None
