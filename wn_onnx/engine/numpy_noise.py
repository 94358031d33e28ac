"""Walking a noise model that has no ONNX form (quantisation, bit flips, plug-ins) on activations,
for :func:`engine.sweep.sweep`: the point's clean values of the batch are perturbed in numpy
(:meth:`NoiseModel.apply`) and fed to the clean graph after the point.

A random model draws per sample, from ``[seed, WALK_STREAM, point, *key, PER_SAMPLE, sample]``:
a sample receives the same numbers whatever the batching (a value without a sample axis gets
one draw per batch). A deterministic model perturbs the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from wn_onnx.engine.draws import PER_BATCH, WALK_STREAM
from wn_onnx.engine.routes import Routes
from wn_onnx.engine.sessions import run
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.graph_passes import ExtractSuffixPass, Point, suffix_inputs
from wn_onnx.io.data import Inputs
from wn_onnx.noise import Reference
from wn_onnx.noise.base import checked_apply, checked_draw

PER_SAMPLE = (1 << 31) + 1  # key marker of per-sample draws


class NumpyWalk:
    """Noise at one activation point, applied in numpy, the clean suffix run on it."""

    cache_tag = None  # per-sample draws are cheap beside the runs: drawn again each round

    def __init__(self, routes: Routes, point: Point, st: SweepSettings, ref: Reference) -> None:
        loaded = routes.loaded
        self.routes, self.point, self.st, self.ref = routes, point, st, ref
        self.top = float(st.top if st.top is not None else np.max(st.sigmas))
        self.output = loaded.output_name
        if point.tensor == self.output:  # noise on the scored output itself: nothing runs after it
            self.session, self.inputs = None, [point.tensor]
        else:
            self.inputs = suffix_inputs(loaded.model.graph, point.tensor, routes.live)
            model = loaded.fresh(self.inputs, [self.output])
            ExtractSuffixPass(self.inputs, [self.output])(model)
            self.session = routes.sessions.build(model)

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.batch, self.first, self.x = batch, first, x
        values = self.routes.run_values(x, self.inputs)
        self.feeds = {n: values[n] for n in self.inputs}
        self.axis = self.routes.sample_axis(self.point.tensor, x)

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def _samples(self) -> np.ndarray:
        """Indices of the batch's samples along the value's sample axis."""
        n = self.feeds[self.point.tensor].shape[self.axis]
        return np.asarray(self.first, np.int64) if not np.isscalar(self.first) else np.arange(self.first, self.first + n)

    def noise(self, key: tuple[int, ...]) -> list[list[np.ndarray]]:
        """Per sample (or per batch, without a sample axis) the model's draws of draw ``key``."""
        model, value = self.st.spec, self.feeds[self.point.tensor]
        if model.deterministic:
            return []
        base = [self.st.seed, WALK_STREAM, self.point.index, *key]
        if self.axis is None:
            return [checked_draw(model, np.random.default_rng([*base, PER_BATCH, self.batch]), value.shape, self.top)]
        shape = value.shape[: self.axis] + value.shape[self.axis + 1 :]
        return [checked_draw(model, np.random.default_rng([*base, PER_SAMPLE, int(i)]), shape, self.top)
                for i in self._samples()]

    def perturbed(self, sa: float, sm: float, draws: list[list[np.ndarray]]) -> np.ndarray:
        model, value = self.st.spec, self.feeds[self.point.tensor]
        if model.deterministic or self.axis is None:
            return checked_apply(model, value, sa, sm, draws[0] if draws else [], self.ref)
        rows = np.moveaxis(value, self.axis, 0)
        out = np.stack([checked_apply(model, row, sa, sm, d, self.ref) for row, d in zip(rows, draws, strict=True)])
        return np.moveaxis(out, 0, self.axis)

    def logits(self, noise: list[list[np.ndarray]], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterator[np.ndarray]:
        for a, m in zip(sa, sm, strict=True):
            noisy = self.perturbed(float(a), float(m), noise)
            if self.session is None:
                yield noisy
            else:
                yield run(self.session, (self.output,), self.feeds | {self.point.tensor: noisy})[0]
