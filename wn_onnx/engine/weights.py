"""Evaluations of noise on weights (``--on weights``), for :func:`engine.sweep.sweep`.

A weight point's tensor is an initializer of one layer; its noise is drawn once per repeat and
held for every sample of that repeat (a programmed chip is one draw that all its inputs share),
keyed by ``[seed, WEIGHT_STREAM, point, repeat]`` so that it depends on neither the batching nor
which other points are walked or perturbed together.

* :class:`WeightWalk`: one weight perturbed; only the graph from its layer on runs, fed the
  layer's clean input (and any skip connection) of the batch, the perturbed weight as an input;
* :class:`WeightGlobal`: every chosen weight perturbed at the same strength, whole graph.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort

from wn_onnx.engine.draws import WEIGHT_STREAM
from wn_onnx.engine.routes import Routes
from wn_onnx.engine.sessions import run
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.graph_passes import ExtractSuffixPass, suffix_inputs
from wn_onnx.graph_passes.weights import WeightPoint, WeightsAsInputsPass
from wn_onnx.io.data import Inputs
from wn_onnx.noise import Reference
from wn_onnx.noise.base import checked_apply, checked_draw

KEEP_DRAWS = 256 << 20  # bytes of weight draws kept across batches (beyond: drawn again, identically)


class WeightNoise:
    """What both evaluations share: the clean weights, their statistics, and the draws per repeat."""

    cache_tag = None  # its draws are kept here (per repeat), not in a round cache

    def __init__(self, routes: Routes, points: list[WeightPoint], st: SweepSettings,
                 session: ort.InferenceSession, inputs: list[str]) -> None:  # fmt: skip
        self.routes, self.points, self.st, self.session, self.inputs = routes, points, st, session, inputs
        initializers = routes.loaded.model.graph.initializers
        self.weights = {p.tensor: initializers[p.tensor].const_value.numpy() for p in points}
        self.refs = {p.tensor: Reference.of_weight(self.weights[p.tensor], p.channel_axis) for p in points}
        self.top = float(st.top if st.top is not None else np.max(st.sigmas))
        self._draws: dict[tuple[int, ...], list[list[np.ndarray]]] = {}

    @property
    def point(self) -> WeightPoint:
        return self.points[0]

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.x = x
        values = self.routes.run_values(x, self.inputs)
        self.feeds = {n: values[n] for n in self.inputs}

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> list[list[np.ndarray]]:
        """Draw ``key`` (repeat, and σ index with redraw) of every perturbed weight: the same for every batch."""
        if key in self._draws:
            return self._draws[key]
        model, seed = self.st.spec, self.st.seed
        draws = [
            checked_draw(model, np.random.default_rng([seed, WEIGHT_STREAM, p.index, *key]), self.weights[p.tensor].shape,
                         self.top)
            for p in self.points
        ]
        held = sum(a.nbytes for d in [*self._draws.values(), draws] for per in d for a in per)
        if held <= KEEP_DRAWS:
            self._draws[key] = draws
        return draws

    def perturbed(self, sa: float, sm: float, draws: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Every perturbed weight at the sweep's components ``sa``, ``sm`` (NoiseModel.apply)."""
        return {p.tensor: checked_apply(self.st.spec, self.weights[p.tensor], float(sa), float(sm), d, self.refs[p.tensor])
                for p, d in zip(self.points, draws, strict=True)}  # fmt: skip

    def logits(self, noise: list[list[np.ndarray]], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterator[np.ndarray]:
        output = self.routes.loaded.output_name
        for a, m in zip(sa, sm, strict=True):
            yield run(self.session, (output,), self.feeds | self.perturbed(a, m, noise))[0]


class WeightWalk(WeightNoise):
    """One weight perturbed, the graph run from its layer on."""

    def __init__(self, routes: Routes, point: WeightPoint, st: SweepSettings) -> None:
        loaded = routes.loaded
        inputs = suffix_inputs(loaded.model.graph, point.data, routes.live)
        model = loaded.fresh(inputs, [loaded.output_name])
        ExtractSuffixPass(inputs, [loaded.output_name])(model)
        WeightsAsInputsPass([point.tensor])(model)
        super().__init__(routes, [point], st, routes.sessions.build(model), inputs)


class WeightGlobal(WeightNoise):
    """Every chosen weight perturbed at once, the whole graph run."""

    def __init__(self, routes: Routes, points: list[WeightPoint], st: SweepSettings) -> None:
        model = routes.loaded.fresh()
        WeightsAsInputsPass([p.tensor for p in points])(model)
        super().__init__(routes, points, st, routes.sessions.build(model), list(routes.loaded.inputs))
