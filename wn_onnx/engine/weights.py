"""Evaluations of noise on weights (``--on weights``), for :func:`engine.sweep.sweep`.

A weight point's tensor is an initializer of one layer; its noise is drawn once per repeat and
held for every sample of that repeat (a programmed chip is one draw that all its inputs share),
keyed by ``[seed, WEIGHT_STREAM, point, repeat]`` so that it depends on neither the batching nor
which other points are walked or perturbed together.

* :class:`WeightWalk`: one weight perturbed; only the graph from its layer on runs, fed the
  layer's clean input (and any skip connection) of the batch, the perturbed weight as an input;
* :class:`WeightGlobal`: every chosen weight perturbed at the same strength, whole graph.

The perturbed layers are the analog ones: with converters (``SweepSettings.converters``, the
``converters`` model) each gets a DAC on its input and an ADC, with output noise drawn per
sample, on its output (graph_passes/converters.py), scaled by the layer's clean ranges.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from wn_onnx.engine.draws import CONVERTER_STREAM, READ_STREAM, WEIGHT_STREAM, draw_at
from wn_onnx.engine.routes import Routes
from wn_onnx.engine.sessions import run
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.errors import ConfigError
from wn_onnx.graph_passes.converters import ConvertersPass
from wn_onnx.graph_passes.read_noise import ReadNoisePass
from wn_onnx.graph_passes.weights import WeightPoint, WeightsAsInputsPass
from wn_onnx.io.data import Inputs
from wn_onnx.noise import Reference
from wn_onnx.noise.base import checked_apply, checked_draw
from wn_onnx.noise.converters import Converters, ConvertersModel, levels_of
from wn_onnx.noise.quant import bits_of

KEEP_DRAWS = 256 << 20  # bytes of weight draws kept across batches (beyond: drawn again, identically)


class WeightNoise:
    """What both evaluations share: the clean weights, their statistics, and the draws per repeat."""

    cache_tag = None  # its draws are kept here (per repeat), not in a round cache

    def __init__(self, routes: Routes, points: list[WeightPoint], st: SweepSettings, model: ir.Model,
                 inputs: list[str], ranges: dict[int, tuple[float, float]] | None = None) -> None:  # fmt: skip
        """``model``: the graph to run, the weights of ``points`` still initializers; ``ranges``: point
        index → the clean max |input| and |output| of its layer (for converters)."""
        self.routes, self.points, self.st, self.inputs = routes, points, st, inputs
        initializers = routes.loaded.model.graph.initializers
        self.weights = {p.tensor: initializers[p.tensor].const_value.numpy() for p in points}
        self.refs = {p.tensor: Reference.of_weight(self.weights[p.tensor], p.channel_axis) for p in points}
        self.top = float(st.top if st.top is not None else np.max(st.sigmas))
        self._draws: dict[tuple[int, ...], list[list[np.ndarray]]] = {}
        self._perturbed: dict[tuple, dict[str, np.ndarray]] = {}  # (key, sa, sm) → the perturbed weights
        self.converters = st.converters or Converters()
        swept = isinstance(st.spec, ConvertersModel)
        self.dac = swept or self.converters.dac_bits is not None
        self.adc = swept or self.converters.adc_bits is not None
        self.out_noise = self.converters.out_noise > 0
        self.ranges = ranges or {}
        self.reads = st.spec.reads_per_sample
        analog = self.dac or self.adc or self.out_noise or self.reads
        tied = [p.tensor for p in points if p.shared]
        if analog and tied:
            raise ConfigError(f"weight {tied[0]!r} is read by several layers: converters and per-sample read noise "
                              "model one array per layer")  # fmt: skip
        WeightsAsInputsPass([p.tensor for p in points])(model)
        if self.dac or self.adc or self.out_noise:
            ConvertersPass([p.tensor for p in points], self.dac, self.adc, self.out_noise)(model)
        if self.reads:  # after the converters: the read noise enters before the ADC, from the DAC's values
            ReadNoisePass([p.tensor for p in points])(model)
        self.session = routes.sessions.build(model)

    @property
    def point(self) -> WeightPoint:
        return self.points[0]

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.x, self.batch, self.first = x, batch, first
        values = self.routes.run_values(x, self.inputs)
        self.feeds = {n: values[n] for n in self.inputs}

    def _output_noise(self, key: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The standard normals an analog layer's output gets on this batch, per sample (draw ``key``):
        the converters' output noise, and the per-sample read noise."""
        streams = [(CONVERTER_STREAM, "wn_out_z")] * self.out_noise + [(READ_STREAM, "wn_read_z")] * self.reads
        if not streams:
            return {}
        shapes = self.routes.shapes(self.x, [p.output for p in self.points])
        out = {}
        for k, p in enumerate(self.points):
            shape, dtype = shapes[p.output]
            axis = self.routes.sample_axis(p.output, self.x)
            for stream, name in streams:
                (z,) = draw_at(self.st.seed, stream, (p.index, *key), shape, axis, 1, dtype, self.first, self.batch)
                out[f"{name}_{k}"] = z
        return out

    def _converter_feeds(self, strength: float) -> dict[str, np.ndarray]:
        """Steps, levels and output-noise scales of the analog layers at ``strength``."""
        if not (self.dac or self.adc or self.out_noise):
            return {}
        swept = bits_of(strength) if isinstance(self.st.spec, ConvertersModel) else None
        dac_bits, adc_bits = self.converters.at(swept)
        feeds: dict[str, np.ndarray] = {}
        for k, p in enumerate(self.points):
            r_in, r_out = self.ranges[p.index]
            if self.dac:
                feeds[f"wn_dac_step_{k}"] = np.float32(max(r_in, 1e-30) / levels_of(dac_bits))
            if self.adc:
                feeds[f"wn_adc_step_{k}"] = np.float32(max(r_out, 1e-30) / levels_of(adc_bits))
            if self.out_noise:
                feeds[f"wn_out_sd_{k}"] = np.float32(self.converters.out_noise * r_out)
        if self.dac:
            feeds["wn_dac_levels"], feeds["wn_dac_sign"] = np.float32(levels_of(dac_bits)), np.float32(dac_bits == 1)
        if self.adc:
            feeds["wn_adc_levels"], feeds["wn_adc_sign"] = np.float32(levels_of(adc_bits)), np.float32(adc_bits == 1)
        return {k: np.asarray(v) for k, v in feeds.items()}

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> tuple[tuple[int, ...], list[list[np.ndarray]], dict[str, np.ndarray]]:
        """Draw ``key`` (repeat, and σ index with redraw): the key, every perturbed weight's draws (the
        same for every batch) and the analog outputs' noise on this batch."""
        return key, self._weight_draws(key), self._output_noise(key)

    def _weight_draws(self, key: tuple[int, ...]) -> list[list[np.ndarray]]:
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

    def read_variances(self, strength: float, draws: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Each layer's per-weight read variance at ``strength`` (per-sample reads only)."""
        if not self.reads:
            return {}
        return {f"wn_read_var_{k}": self.st.spec.read_variance(self.weights[p.tensor], float(strength), d, self.refs[p.tensor])
                for k, (p, d) in enumerate(zip(self.points, draws, strict=True))}  # fmt: skip

    def _weights_at(self, key: tuple[int, ...], sa: float, sm: float, draws: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        """The perturbed weights (and per-sample read variances) of draw ``key`` at (``sa``, ``sm``):
        computed once per repeat and level, not per batch, while they fit KEEP_DRAWS."""
        cached = self._perturbed.get((key, sa, sm))
        if cached is not None:
            return cached
        weights = self.perturbed(sa, sm, draws) | self.read_variances(sa, draws)
        held = sum(a.nbytes for kept in [*self._perturbed.values(), weights] for a in kept.values())
        if held <= KEEP_DRAWS:
            self._perturbed[(key, sa, sm)] = weights
        return weights

    def logits(self, noise: tuple[tuple[int, ...], list[list[np.ndarray]], dict[str, np.ndarray]], sa: np.ndarray,
               sm: np.ndarray, fresh: bool) -> Iterator[np.ndarray]:  # fmt: skip
        output = self.routes.loaded.output_name
        key, draws, out_noise = noise
        for a, m in zip(sa, sm, strict=True):
            feeds = self.feeds | self._weights_at(key, float(a), float(m), draws) | self._converter_feeds(a) | out_noise
            yield run(self.session, (output,), feeds)[0]


class WeightWalk(WeightNoise):
    """One weight perturbed, the graph run from its layer on."""

    def __init__(self, routes: Routes, point: WeightPoint, st: SweepSettings,
                 ranges: dict[int, tuple[float, float]] | None = None) -> None:  # fmt: skip
        super().__init__(routes, [point], st, *routes.after(point.data), ranges)


class WeightGlobal(WeightNoise):
    """Every chosen weight perturbed at once, the whole graph run."""

    def __init__(self, routes: Routes, points: list[WeightPoint], st: SweepSettings,
                 ranges: dict[int, tuple[float, float]] | None = None) -> None:  # fmt: skip
        super().__init__(routes, points, st, routes.loaded.fresh(), list(routes.loaded.inputs), ranges)
