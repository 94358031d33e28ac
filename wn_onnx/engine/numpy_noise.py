"""A noise model that has no ONNX form (quantisation, bit flips, plug-ins) on activations, for
:func:`engine.sweep.sweep`, applied in numpy (:meth:`NoiseModel.apply`):

* :class:`NumpyWalk`: the point's clean values of the batch perturbed and fed to the clean graph
  after the point;
* :class:`NumpyGlobal`: every point perturbed, the graph run in stages cut at the points in graph
  order — each stage computes the next point from the graph's inputs and the points already
  perturbed, which are fed to it perturbed — then the rest of the graph. With one point it is
  the walk on a graph with control flow, whose outer-scope reads hide the suffix's inputs.

A random model draws per sample, from ``[seed, stream, point, *key, PER_SAMPLE, sample]``: a
sample receives the same numbers whatever the batching (a value without a sample axis gets one
draw per batch). A deterministic model perturbs the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from wn_onnx.engine.draws import GLOBAL_STREAM, PER_BATCH, WALK_STREAM
from wn_onnx.engine.routes import Routes
from wn_onnx.engine.sessions import run
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.graph_passes import ExtractSuffixPass, Point
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
            model, self.inputs = routes.after(point.tensor)
            self.session = routes.sessions.build(model)

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.batch, self.first, self.x = batch, first, x
        values = self.routes.run_values(x, self.inputs)
        self.feeds = {n: values[n] for n in self.inputs}
        self.axis = self.routes.sample_axis(self.point.tensor, x)

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> list[list[np.ndarray]]:
        """Per sample (or per batch, without a sample axis) the model's draws of draw ``key``."""
        return draws_for(self.st, self.top, WALK_STREAM, self.point, key, self.feeds[self.point.tensor], self.axis,
                         self.first, self.batch)  # fmt: skip

    def perturbed(self, sa: float, sm: float, draws: list[list[np.ndarray]]) -> np.ndarray:
        return perturb_rows(self.st, self.feeds[self.point.tensor], self.axis, sa, sm, draws, self.ref)

    def logits(self, noise: list[list[np.ndarray]], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterator[np.ndarray]:
        for a, m in zip(sa, sm, strict=True):
            noisy = self.perturbed(float(a), float(m), noise)
            if self.session is None:
                yield noisy
            else:
                yield run(self.session, (self.output,), self.feeds | {self.point.tensor: noisy})[0]


def draws_for(st: SweepSettings, top: float, stream: int, point: Point, key: tuple[int, ...], value: np.ndarray,
              axis: int | None, first: int | np.ndarray, batch: int) -> list[list[np.ndarray]]:  # fmt: skip
    """The model's draws of ``key`` for each sample of ``value`` along ``axis`` (samples ``first…``
    or those ``first`` lists), or one for the batch without a sample axis; none when deterministic."""
    model = st.spec
    if model.deterministic:
        return []
    base = [st.seed, stream, point.index, *key]
    if axis is None:
        return [checked_draw(model, np.random.default_rng([*base, PER_BATCH, batch]), value.shape, top)]
    n = value.shape[axis]
    samples = np.asarray(first, np.int64) if not np.isscalar(first) else np.arange(first, first + n)
    shape = value.shape[:axis] + value.shape[axis + 1 :]
    return [checked_draw(model, np.random.default_rng([*base, PER_SAMPLE, int(i)]), shape, top) for i in samples]


def perturb_rows(st: SweepSettings, value: np.ndarray, axis: int | None, sa: float, sm: float,
                 draws: list[list[np.ndarray]], ref: Reference) -> np.ndarray:  # fmt: skip
    """``value`` perturbed sample by sample with its draws (as a whole when deterministic or without a sample axis)."""
    model = st.spec
    if model.deterministic or axis is None:
        return checked_apply(model, value, sa, sm, draws[0] if draws else [], ref)
    rows = np.moveaxis(value, axis, 0)
    out = np.stack([checked_apply(model, row, sa, sm, d, ref) for row, d in zip(rows, draws, strict=True)])
    return np.moveaxis(out, 0, axis)


class NumpyGlobal:
    """Every point perturbed at the same strength, the graph run in stages cut at the points;
    ``stream``: WALK_STREAM when it walks one point (the draws NumpyWalk gives it)."""

    cache_tag = None

    def __init__(self, routes: Routes, points: list[Point], st: SweepSettings, refs: dict[int, Reference],
                 stream: int = GLOBAL_STREAM) -> None:  # fmt: skip
        loaded = routes.loaded
        self.routes, self.points, self.st, self.refs, self.stream = routes, points, st, refs, stream
        self.top = float(st.top if st.top is not None else np.max(st.sigmas))
        self.output = loaded.output_name
        known = list(loaded.inputs)
        self.stages = []
        for p in [*points, None]:
            target = self.output if p is None else p.tensor
            if target in known:  # a graph input, or the output itself as a point
                self.stages.append((p, None))
            else:
                model = loaded.fresh(known, [target])
                ExtractSuffixPass(known, [target])(model)
                self.stages.append((p, routes.sessions.build(model)))
            if p is not None and p.tensor not in known:
                known = [*known, p.tensor]

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.batch, self.first, self.x = batch, first, x
        self.feeds = self.routes.feeds(x)
        self.axes = {p.index: self.routes.sample_axis(p.tensor, x) for p in self.points}

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> tuple[tuple[int, ...], dict]:
        """The draw's key: each point's draws need its perturbed input, so they are made in :meth:`logits`."""
        return key, {}

    def logits(self, noise: tuple[tuple[int, ...], dict], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterator[np.ndarray]:
        key, kept = noise
        for a, m in zip(sa, sm, strict=True):
            values = dict(self.feeds)
            for p, session in self.stages:
                target = self.output if p is None else p.tensor
                if session is not None:
                    wanted = [i.name for i in session.get_inputs()]
                    values[target] = run(session, (target,), {n: values[n] for n in wanted})[0]
                if p is None:
                    yield values[target]
                    break
                axis = self.axes[p.index]
                if p.index not in kept:  # a point's draws depend on its shape only: made once per (batch, key)
                    kept[p.index] = draws_for(self.st, self.top, self.stream, p, key, values[target], axis, self.first,
                                              self.batch)  # fmt: skip
                values[target] = perturb_rows(self.st, values[target], axis, float(a), float(m), kept[p.index],
                                              self.refs[p.index])  # fmt: skip
