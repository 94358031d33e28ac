"""The graphs derived from one model, built once per scan and cached.

* clean prefixes: the part of the graph computing some values (taps) and nothing after them;
* suffixes: the graph after a walked point, fed its clean activation, noise stacked over σ on
  the point's sample axis (engine.axes);
* affine chains: single-consumer affine ops after a point, reduced to their linear part, that
  carry the noise so the σ loop starts after them;
* whole graphs with fed noise at chosen points (global sweeps, the reference walk, plans).

The clean values that the walks of several points read can be shared (:class:`SharedTaps`):
one prefix run per batch for all of them instead of one per point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from wn_onnx.engine.axes import Probed, probe_axes
from wn_onnx.engine.draws import WalkDraws
from wn_onnx.engine.sessions import Sessions, extracted, run
from wn_onnx.engine.stacking import stacking_is_exact
from wn_onnx.graph_passes import (
    ExtractSuffixPass,
    InsertNoisePass,
    LinearPartPass,
    Point,
    affine_chain,
    data_dependent,
    suffix_inputs,
)
from wn_onnx.graph_passes.extract import has_subgraphs
from wn_onnx.graph_passes.insert_noise import StackNoisyInputPass
from wn_onnx.io.data import Dataset, Inputs, feeds
from wn_onnx.io.model import LoadedModel
from wn_onnx.noise import NoiseSpec

PREFIX_CACHE = 4  # clean-prefix sessions kept at once


@dataclass
class Route:
    """Where a walked point's noise is evaluated (see :meth:`Routes.route`)."""

    tensor: str  # value the noisy suffix starts from
    chain: ort.InferenceSession | None  # linear part of the affine chain carrying the noise there, if any
    spec: NoiseSpec  # noise as the suffix applies it
    session: ort.InferenceSession | None  # None: the noise lands on the scored output itself
    inputs: list[str]
    stack: bool
    probed: bool = False  # stacking checked against one σ per run (see engine.stacking)


class Routes:
    """Derived graphs of ``loaded`` and their sessions."""

    def __init__(self, loaded: LoadedModel, sessions: Sessions) -> None:
        self.loaded = loaded
        self.sessions = sessions
        self.live = data_dependent(loaded.model.graph)
        self.subgraphs = has_subgraphs(loaded.model.graph)  # control flow hides reads from a cut
        self._prefixes: dict[tuple[str, ...], ort.InferenceSession] = {}
        self._clean: ort.InferenceSession | None = None
        self._suffix: dict[tuple, tuple[ort.InferenceSession | None, list[str], bool]] = {}
        self._routes: dict[tuple, Route] = {}
        self._noisy: dict[tuple, ort.InferenceSession] = {}
        self._axes: dict[str, Probed] | None = None  # value → what the axis probe saw of it
        self.shared: SharedTaps | None = None  # clean values kept for the walks of a group of points
        self.draws: WalkDraws | None = None  # walk-stream noise kept for the walks of every point
        self.stack_samples = 1 << 40  # samples (σ values × batch) one stacked suffix run may hold (memory budget)

    def _prefix(self, names: tuple[str, ...]) -> ort.InferenceSession:
        """The part of the clean graph that computes ``names`` from the input (and nothing
        after them); the few most recent ones are kept."""
        if names not in self._prefixes:
            self._prefixes[names] = self.sessions.build(extracted(self.loaded, list(self.loaded.inputs), list(names)))
            while len(self._prefixes) > PREFIX_CACHE:
                del self._prefixes[next(iter(self._prefixes))]
        return self._prefixes[names]

    def feeds(self, x: np.ndarray | Inputs) -> dict[str, np.ndarray]:
        """The graph inputs for samples ``x`` (an array: the single input)."""
        return feeds(x, self.loaded.input_name)

    def run_values(self, x: np.ndarray | Inputs, names: list[str]) -> dict[str, np.ndarray]:
        """Clean values ``names`` only (graph inputs among them as fed): the graph after them is not computed."""
        fed = self.feeds(x)
        wanted = tuple(dict.fromkeys(n for n in names if n not in self.loaded.inputs))
        out = dict(zip(wanted, run(self._prefix(wanted), wanted, fed), strict=True)) if wanted else {}
        return out | fed

    def clean_logits(self, x: np.ndarray | Inputs) -> np.ndarray:
        """Scored output of the unmodified model (all of onnxruntime's fusions apply)."""
        if self._clean is None:
            self._clean = self.sessions.build(self.loaded.proto)
        return run(self._clean, (self.loaded.output_name,), self.feeds(x))[0]

    def sample_axis(self, name: str, x: np.ndarray | Inputs) -> int | None:
        """The axis of value ``name`` that holds the samples (None: none found; see engine.axes),
        probed once for every value of the graph with samples taken from ``x``."""
        probed = self._probed(name, x)
        return None if probed is None else probed.axis

    def _probed(self, name: str, x: np.ndarray | Inputs) -> Probed | None:
        if self._axes is None:
            self._axes = probe_axes(self.loaded, self.sessions, self.live, x)
        return self._axes.get(name)

    def sample_bytes(self, name: str, x: np.ndarray | Inputs) -> float:
        """Bytes value ``name`` holds per sample (probed with samples from ``x``; infinite where
        the probe did not see it, so that no budget keeps it)."""
        probed = self._probed(name, x)
        return float("inf") if probed is None else probed.sample_bytes

    def sample_numbers(self, name: str, x: np.ndarray | Inputs) -> int:
        """Numbers value ``name`` holds per sample (0 where its samples have no axis)."""
        probed = self._probed(name, x)
        if probed is None or probed.axis is None:
            return 0
        return int(np.prod(probed.shape, dtype=np.int64)) // max(probed.shape[probed.axis], 1)

    def shapes(self, x: np.ndarray | Inputs, names: list[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """(shape, dtype) of values ``names`` on batch ``x``: from the axis probe where the samples
        have an axis (no run over the data: noise draws need no more), else from a prefix run."""
        known = {}
        for n in names:
            probed = self._probed(n, x)
            if probed is not None and probed.axis is not None:
                known[n] = (probed.shape_for(len(x)), probed.dtype)
        rest = [n for n in names if n not in known]
        values = self.run_values(x, rest) if rest else {}
        return {n: known[n] if n in known else (values[n].shape, values[n].dtype) for n in names}

    def tap_names(self, point: Point, spec: NoiseSpec, full: bool) -> list[str]:
        """The clean values a walk of ``point`` reads, known before any of its sessions is built:
        the point's, then the inputs of the suffix its route starts (see :meth:`route`);
        ``full``: the whole-graph walk, which reads the point's only."""
        if full or self.subgraphs:
            return [point.tensor]
        chain = affine_chain(self.loaded.model.graph, point.tensor, self.live) if spec.kind != "mixed" else []
        start = chain[-1] if chain else point.tensor
        if start == self.loaded.output_name:
            return [point.tensor, start]
        return [point.tensor, *suffix_inputs(self.loaded.model.graph, start, self.live)]

    def suffix(
        self, tensor: str, spec: NoiseSpec, x: np.ndarray | Inputs
    ) -> tuple[ort.InferenceSession | None, list[str], bool]:
        """The graph after value ``tensor`` with ``spec`` noise on it, stacked over σ values on the
        value's sample axis (probed with samples from ``x``).

        Returns (session or None when ``tensor`` is the scored output itself, the clean values
        the session reads, whether several σ may share one run). Only a suffix whose single
        input has a free sample axis, and whose output has its samples on axis 0, may stack σ
        values: skip connections would need tiling. Without a sample axis each σ gets a run.
        """
        key = (tensor, spec)
        if key not in self._suffix:
            if tensor == self.loaded.output_name:
                self._suffix[key] = (None, [tensor], True)
            else:
                axis = self.sample_axis(tensor, x)
                model, inputs = self.after(tensor)
                value, probed = model.graph.inputs[0], self._probed(tensor, x)
                if value.shape is None:  # shape inference lost it; the probe saw its rank
                    value.shape = ir.Shape([None] * (0 if probed is None else len(probed.shape)))
                StackNoisyInputPass(tensor, spec, axis or 0)(model)
                stack = (
                    len(inputs) == 1
                    and axis is not None
                    and self.sample_axis(self.loaded.output_name, x) == 0
                    and not isinstance(value.shape[axis], int)
                )
                self._suffix[key] = (self.sessions.build(model, arena=True), inputs, stack)
        return self._suffix[key]

    def after(self, tensor: str) -> tuple[ir.Model, list[str]]:
        """The clean graph after value ``tensor`` (a private copy to run passes on), and the clean
        values it reads: ``tensor`` first, then any skip connection."""
        inputs = suffix_inputs(self.loaded.model.graph, tensor, self.live)
        model = self.loaded.fresh(inputs, [self.loaded.output_name])
        ExtractSuffixPass(inputs, [self.loaded.output_name])(model)
        return model, inputs

    def route(self, point: Point, spec: NoiseSpec, x: np.ndarray | Inputs) -> Route:
        """How to evaluate noise at ``point`` (``x``: samples for the axis probe): straight into
        the suffix after it, or — for additive or multiplicative noise followed by affine ops
        (Conv, Gemm, BatchNorm, …) — carried exactly through them, A(x + σ·t) = A(x) + σ·L(t)
        with L the chain's linear part, so the σ loop starts after the chain."""
        key = (point.tensor, spec)
        if key not in self._routes:
            chain = affine_chain(self.loaded.model.graph, point.tensor, self.live) if spec.kind != "mixed" else []
            if not chain:
                self._routes[key] = Route(point.tensor, None, spec, *self.suffix(point.tensor, spec, x))
            else:
                model = self.loaded.fresh([point.tensor], [chain[-1]])
                ExtractSuffixPass([point.tensor], [chain[-1]])(model)
                LinearPartPass()(model)
                additive = NoiseSpec("add")
                self._routes[key] = Route(
                    chain[-1], self.sessions.build(model), additive, *self.suffix(chain[-1], additive, x)
                )
        return self._routes[key]

    def check_stacking(self, route: Route, start: np.ndarray, x: np.ndarray | Inputs) -> None:
        """Turn ``route``'s stacking off, once, where it would change results (engine.stacking);
        ``start``: clean activations the route starts from."""
        if route.stack and not route.probed and route.session is not None:
            axis = self.sample_axis(route.tensor, x)
            route.stack = stacking_is_exact(
                route.session, route.spec, route.tensor, start, axis, self.loaded.output_name
            )
            route.probed = True

    def mixes_samples(self, point: Point, spec: NoiseSpec) -> bool:
        """Whether the graph after ``point`` was found to mix the samples of a batch (its results
        then depend on the batch size); False when not found or not probed."""
        route = self._routes.get((point.tensor, spec))
        return bool(route is not None and route.probed and not route.stack)

    def release(self) -> None:
        """Drop the sessions of walked points: each holds an onnxruntime arena sized for stacked
        batches, and a walk visits points one after another."""
        self._suffix.clear()
        self._routes.clear()

    def noisy(self, points: list[Point], spec: NoiseSpec, repeated: bool = False) -> ort.InferenceSession:
        """The whole graph with fed noise at ``points`` (global sweeps, the reference walk);
        ``repeated``: each point averages as many noise samples as its fed ``z`` stacks."""
        key = (tuple(p.tensor for p in points), spec, repeated)
        if key not in self._noisy:
            model = self.loaded.fresh()
            reps = [1] * len(points) if repeated else None
            InsertNoisePass([p.tensor for p in points], spec, source="fed", repetitions=reps)(model)
            self._noisy[key] = self.sessions.build(model)
        return self._noisy[key]


class SharedTaps:
    """Clean values ``names`` of every batch of one data set, each batch's computed by one prefix
    run the first time a walk asks for it and kept for the walks of the group's other points, or
    of a lone point whose trials come back to samples (their bytes are bounded by whoever groups
    the points, see Engine.tap_groups). ``data`` and ``size``
    (its batches): the values of listed samples (the sequential estimator's trials) are taken from
    those of the batches that hold them, instead of a prefix run for every trial batch of every point."""

    def __init__(self, routes: Routes, names: list[str], data: Dataset | None = None, size: int = 0) -> None:
        self.routes, self.data, self.size = routes, data, size
        self.names = [n for n in dict.fromkeys(names) if n not in routes.loaded.inputs]
        self.values: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def covers(self, names: list[str]) -> bool:
        return set(names) <= {*self.names, *self.routes.loaded.inputs}

    def get(self, first: int, x: np.ndarray | Inputs, names: list[str]) -> dict[str, np.ndarray]:
        """Values ``names`` (all covered) of the batch of samples ``first…first+len(x)-1``."""
        key = (first, len(x))
        if key not in self.values:  # the inputs are not kept: the caller holds them (224² images: 600 kB a sample)
            computed = self.routes.run_values(x, self.names)
            self.values[key] = {n: computed[n] for n in self.names}
        kept = self.values[key]
        if all(n in kept for n in names):
            return {n: kept[n] for n in names}
        fed = self.routes.feeds(x)  # an input among the names (only then: with several inputs it is a copy)
        return {n: kept[n] if n in kept else fed[n] for n in names}

    def listed(self, samples: np.ndarray, x: np.ndarray | Inputs, names: list[str]) -> dict[str, np.ndarray] | None:
        """Values ``names`` (all covered) of the samples ``samples`` lists (``x``: their inputs), in
        that order; None where that cannot be read from whole batches (no data, a batch built into
        the model, a value without a sample axis)."""
        if self.data is None or self.routes.loaded.fixed_batch:
            return None
        inner = [n for n in dict.fromkeys(names) if n not in self.routes.loaded.inputs]
        axes = {n: self.routes.sample_axis(n, x) for n in inner}
        if any(a is None for a in axes.values()):
            return None
        batch = samples // self.size
        out: dict[str, np.ndarray] = {}
        for b in np.unique(batch):
            first = int(b) * self.size
            rows = min(self.size, len(self.data) - first)
            kept = self.values.get((first, rows)) or self.get(first, self.data.x[first : first + rows], inner)  # read once
            mine = np.flatnonzero(batch == b)
            for n, ax in axes.items():
                if n not in out:
                    shape = list(kept[n].shape)
                    shape[ax] = len(samples)
                    out[n] = np.empty(shape, kept[n].dtype)
                np.moveaxis(out[n], ax, 0)[mine] = np.moveaxis(kept[n], ax, 0)[samples[mine] - first]
        return self.routes.feeds(x) | out
