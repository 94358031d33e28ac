"""Where the samples of a batch lie in each value of a graph.

Not always on axis 0: an exported LSTM/GRU output Y is [seq, dir, N, H], attention inside a
TorchScript TransformerEncoder works on [L, N, E], and a dynamo export folds the heads into the
batch ([N·heads, L, d]: no axis holds the samples alone). The axis is found by a probe: the
same graph run on 2 and on 3 samples; the one axis whose length goes from 2 to 3 holds the
samples. Values with no such axis get None: their noise is drawn per batch and their σ values
are never stacked.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from wn_onnx.engine.sessions import Sessions, extracted
from wn_onnx.graph_passes.insert_noise import values_by_name
from wn_onnx.io.data import Inputs, feeds
from wn_onnx.io.model import LoadedModel

PROBE_SIZES = (2, 3)


def probe_batches(x: np.ndarray | Inputs) -> list[np.ndarray | Inputs]:
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


class Probed(NamedTuple):
    """What the probe saw of one value."""

    axis: int | None  # the samples' axis (None: none found)
    shape: tuple[int, ...]  # on the last probe batch
    dtype: np.dtype
    sample_bytes: float  # bytes per sample

    def shape_for(self, samples: int) -> tuple[int, ...] | None:
        """The value's shape on a batch of ``samples`` samples, where its samples have an axis."""
        if self.axis is None:
            return None
        return (*self.shape[: self.axis], samples, *self.shape[self.axis + 1 :])


def probe_axes(
    loaded: LoadedModel, sessions: Sessions, live: set[ir.Value], x: np.ndarray | Inputs
) -> dict[str, Probed]:
    """value name → what a probe saw of it, for every data-dependent value of the model (graph
    inputs as fed), from one session exposing them all, run on PROBE_SIZES samples of ``x`` (on
    the built-in batch of a model that has one)."""
    graph = loaded.model.graph
    values = [v for n in graph for v in n.outputs] + list(values_by_name(graph, inner=True).values())  # If branches too
    names = list(dict.fromkeys(v.name for v in values if v.name and v in live and v.producer() is not None))
    fixed = loaded.fixed_batch
    batches = [x[np.arange(fixed) % len(x)]] if fixed else probe_batches(x)
    fed = [feeds(b, loaded.input_name) for b in batches]
    axes = {}
    try:
        session = sessions.build(extracted(loaded, list(loaded.inputs), names))
        runs = [[(v.shape, v.dtype, v.nbytes) if isinstance(v, np.ndarray) else None  # the values let go at once
                 for v in [*session.run(names, f), *f.values()]] for f in fed]  # fmt: skip
    except Exception:  # the graph does not run on other batch sizes: no axis known
        one = feeds(x[:1], loaded.input_name)  # its inputs only, as fed
        moved, per_sample = (x.axes, x.arrays) if isinstance(x, Inputs) else ({}, one)
        return {
            n: Probed(moved.get(n, 0) if n in per_sample else None, v.shape, v.dtype, v.nbytes) for n, v in one.items()
        }
    names = [*names, *fed[0]]
    for name, values in zip(names, zip(*runs, strict=True), strict=True):
        if all(v is not None for v in values):
            shapes = [v[0] for v in values]
            axis = fixed_sample_axis(shapes[0], fixed) if fixed else sample_axis(shapes)
            shape, dtype, nbytes = values[-1]
            axes[name] = Probed(axis, shape, dtype, nbytes / len(batches[-1]))
    return axes
