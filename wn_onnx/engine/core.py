"""The Engine: one model's onnxruntime evaluation of accuracy under noise, for a whole scan.

Costs are paid once where possible (docs/reference.md, "Design principle"): sessions are built once per scan
(engine.sessions), derived graphs once per point (engine.routes), the clean activations the
walks of a group of points start from by one run per batch for all of them (Engine.tap_groups),
the walk noise once per (repeat, batch) for every point and σ (engine.draws), and several σ
values share one run where that is exact (engine.stacking). Every shortcut is checked against
a plain whole-graph evaluator in tests/test_reference.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from wn_onnx.engine.draws import PLAN_STREAM, WALK_STREAM, WalkDraws, draw_at
from wn_onnx.engine.global_noise import GlobalNoise
from wn_onnx.engine.memory import Budget, Share, peak_live
from wn_onnx.engine.numpy_noise import NumpyGlobal, NumpyWalk
from wn_onnx.engine.round_cache import RAM_BYTES, RoundCache
from wn_onnx.engine.routes import Routes, SharedTaps
from wn_onnx.engine.sessions import Sessions
from wn_onnx.engine.sweep import Batch, Counts, Evaluation, SweepSettings, sweep
from wn_onnx.engine.walking import AtOutput, FullGraph, Suffix, WalkPoint
from wn_onnx.engine.weights import WeightGlobal, WeightWalk
from wn_onnx.errors import ModelError
from wn_onnx.graph_passes import Point, z_input_names
from wn_onnx.graph_passes.insert_noise import SIGMA_INPUT
from wn_onnx.graph_passes.noise_functions import sigma_inputs
from wn_onnx.graph_passes.weights import WeightPoint
from wn_onnx.io.data import Dataset, Inputs
from wn_onnx.io.model import LoadedModel
from wn_onnx.metrics import get_metric, samples_first, score
from wn_onnx.noise import NoiseModel, NoiseSpec, Reference
from wn_onnx.noise.converters import ConvertersModel

NOISY_COPIES = 3  # copies of a noisy value a run makes besides the clean graph's (tiled, scaled noise, noisy)
TAP_BYTES = 256 << 20  # clean values kept at once for the walks of a group of points, whole data (at most)


ROW_PROBE = 4  # samples run alone to check that the rows of a batch do not interact (Engine.rows_interact)


class Engine:
    """The onnxruntime sessions of one scan, built once and reused."""

    def __init__(
        self, loaded: LoadedModel, providers: list[str], threads: int = 0, memory: int | Share | None = None
    ) -> None:
        """``memory``: the peak resident bytes the process may reach (engine.memory; a worker's
        share of a command's budget; None: what it holds now plus the default budget)."""
        self.loaded = loaded
        self.sessions = Sessions(providers, threads)
        self.routes = Routes(loaded, self.sessions)
        self.budget = Budget.measure(memory, loaded.model.graph)
        self._live: float | None = None  # bytes per sample alive at once in a run (see memory.peak_live)
        self._clean: tuple[object, np.ndarray] | None = None  # (the data's inputs, their clean outputs, samples first)
        self._out_axis: int | None = None  # the scored output's sample axis (output_axis)
        self._run: tuple[tuple[int, ...], int] | None = None  # (shape, samples) of the last clean run of clean_outputs
        self._refs: dict[tuple[int, float | None], Reference] = {}  # activation statistics (engine.numpy_noise)
        self._ranges: dict[int, tuple[float, float]] = {}  # analog layers' clean input and output ranges

    @property
    def providers(self) -> list[str]:
        return self.sessions.providers

    def session(self, model: ir.Model) -> ort.InferenceSession:
        return self.sessions.build(model)

    def run_values(self, x: np.ndarray | Inputs, names: list[str]) -> dict[str, np.ndarray]:
        return self.routes.run_values(x, names)

    def clean_logits(self, x: np.ndarray | Inputs) -> np.ndarray:
        """The scored output of samples ``x`` without noise, samples first (:meth:`output_axis`)."""
        out = self.routes.clean_logits(x)
        axis = self.output_axis(x)
        if out.ndim <= axis or out.shape[axis] != len(x):  # no axis that holds the samples
            self._run = (out.shape, len(x))
            raise ModelError(f"{self.output_run()}: the scored output needs an axis that holds the samples")
        return samples_first(out, axis)

    def output_axis(self, x: np.ndarray | Inputs) -> int:
        """The axis of the scored output that holds the samples as the model returns it (engine.axes'
        probe with samples from ``x``; 0 where the probe found none: a batch built into the model,
        a graph that runs on no other batch size). Every output the engine scores is moved to
        samples first; a plug-in metric gets it back in this layout (metrics.score)."""
        if self._out_axis is None:
            probed = self.routes.sample_axis(self.loaded.output_name, x)
            self._out_axis = 0 if probed is None else probed
        return self._out_axis

    def output_run(self) -> str:
        """``model: output 'y' (declared 1×seqlen) has shape 6×20×5 for a run of 20 samples``: the
        last clean run of :meth:`clean_outputs` (the shape a run really returns, not the declared one)."""
        shape, samples = self._run or ((), 0)
        return (f"{self.loaded.path}: output {self.loaded.output_name!r} (declared {self.loaded.output_shape}) has shape "
                f"{'×'.join(map(str, shape)) or 'scalar'} for a run of {samples} samples")  # fmt: skip

    def clean_outputs(self, data: Dataset, batch_size: int) -> np.ndarray:
        """The clean outputs of every sample of ``data``, samples first (σ = 0; a fixed batch's
        padding rows at the end), computed once and kept: every walk, global sweep and sequential
        estimate on the same data reads its σ = 0 results here instead of running the model again."""
        if self._clean is None or self._clean[0] is not data.x:
            size = self.clean_batch(data, batch_size)
            runs = []
            for b in self.batches(data, size):
                runs.append(self.clean_logits(b.x))
                shape = list(runs[-1].shape)
                shape.insert(self.output_axis(b.x), shape.pop(0))
                self._run = (tuple(shape), len(b.x))
            self.remember_clean(data, np.concatenate(runs))
        return self._clean[1]

    def rows_interact(self, data: Dataset, batch_size: int) -> tuple[int, float] | None:
        """(row, largest relative difference) when a sample's clean output changes with the rows
        it runs with — the first ROW_PROBE samples run one at a time against their outputs in
        the clean runs of ``batch_size`` (an LSTM run across the batch axis, batch statistics,
        dynamic quantization's batch-wide scale) —, else None. Such a graph's numbers would
        depend on the samples per run; a batch of 1, and a batch built into the model (its
        runs always hold that batch), have nothing to compare."""
        clean, k = self.clean_outputs(data, batch_size), min(len(data), ROW_PROBE)
        if self.clean_batch(data, batch_size) == 1 or self.loaded.fixed_batch is not None or k < 2:
            return None
        scale = float(np.nanmax(np.abs(clean[:k]), initial=0.0)) or 1.0
        # io/batch_axis.py's tolerance for a freed batch, widened to the output's own precision
        # (float16 kernels round differently per batch size by ~10⁻³)
        eps = 10 * float(np.finfo(clean.dtype).eps) if np.issubdtype(clean.dtype, np.floating) else 0.0
        rtol, atol = max(1e-4, eps), max(1e-5, eps) * scale
        for row in range(k):
            alone = self.clean_logits(data.x[np.array([row])])
            if alone.shape != clean[row : row + 1].shape or not np.allclose(
                alone, clean[row : row + 1], rtol=rtol, atol=atol, equal_nan=True
            ):
                with np.errstate(invalid="ignore"):
                    return row, float(np.nanmax(np.abs(alone - clean[row : row + 1]), initial=np.inf) / scale)
        return None

    def remember_clean(self, data: Dataset, outputs: np.ndarray) -> None:
        """Keep ``outputs`` as the clean outputs of ``data`` (a worker gets them from the scan process)."""
        self._clean = (data.x, outputs)

    def sample_axis(self, name: str, x: np.ndarray | Inputs) -> int | None:
        return self.routes.sample_axis(name, x)

    def mixes_samples(self, point: Point, spec: NoiseSpec) -> bool:
        return self.routes.mixes_samples(point, spec)

    def release(self, point: Point) -> None:
        """Drop the sessions of a walked point (see Routes.release)."""
        self.routes.release()

    def batches(self, data: Dataset, size: int) -> Iterator[Batch]:
        """The runs over ``data``; a model exported with a fixed batch gets exactly that many
        samples per run, the last batch padded (the padding is not scored)."""
        size = self.batch_size(size)
        for b, (x, y, n) in enumerate(data.batches(size, pad=self.loaded.fixed_batch is not None)):
            yield Batch(b * size, x, y, n)

    def batch_size(self, requested: int) -> int:
        """Samples per run: ``requested``, unless the model's batch is built in."""
        return self.loaded.fixed_batch or requested

    def sweep_work(self, data: Dataset, st: SweepSettings) -> int:
        """How many configurations a walk or global sweep of ``st`` on ``data`` reports to its
        ``tick``: one per (batch, repeat, σ with noise); σ = 0 is the kept clean result."""
        return -(-len(data) // self.batch_size(st.batch_size)) * st.runs(1)

    def _per_sample(self, data: Dataset) -> tuple[np.ndarray, float]:
        """A few samples of ``data`` (for the axis probe), and the bytes per sample alive at
        once in a clean run; the suffix runs' σ stacking is bounded by the budget from here on
        (per stacked sample: the suffix's values and the noisy copies of the start value)."""
        x = data.x[:3]
        if self._live is None:
            graph = self.loaded.model.graph
            names = [v.name for v in graph.inputs] + [v.name for node in graph for v in node.outputs if v.name]
            sizes = {n: self._bytes(n, x) for n in names}
            self._live = peak_live(graph, sizes)
            largest = max(sizes.values(), default=0.0)  # a stacked suffix may start at any value
            self.routes.stack_samples = self.budget.samples(self._live + NOISY_COPIES * largest, 1 << 40)
        return x, self._live

    def clean_batch(self, data: Dataset, requested: int) -> int:
        """Samples per clean run on ``data`` within the budget (at most ``requested``)."""
        _, live = self._per_sample(data)
        return self.budget.samples(live, requested)

    def walk_batch(self, points: list[Point], data: Dataset, st: SweepSettings) -> int:
        """Samples per run for walks of ``points`` (one size for all: they may share clean values):
        a run holds the point's clean values, its noise (and that carried through an affine
        chain) besides the values alive in the suffix."""
        x, live = self._per_sample(data)
        full = st.walk == "full" or self.routes.subgraphs
        need = 0.0
        for p in points:
            if isinstance(p, WeightPoint):  # the suffix's values, its clean input and a perturbed weight (no samples)
                need = max(need, live + self._bytes(p.data, x))
                continue
            if not isinstance(st.spec, NoiseSpec):  # the suffix's values, the point's clean and perturbed copies, its draws
                size = self._bytes(p.tensor, x)
                top = float(st.top if st.top is not None else np.max(st.sigmas))
                need = max(need, live + (NOISY_COPIES + 1) * size + st.spec.draw_bytes(int(size / 4), top))
                continue
            if full:
                need = max(need, self._global_need([p], st, x, live))
                continue
            taps = sum(self._bytes(n, x) for n in self.routes.tap_names(p, st.spec, False))
            need = max(need, live + taps + (2 * st.spec.draws + NOISY_COPIES) * self._bytes(p.tensor, x))
        return self.budget.samples(need, st.batch_size)

    def global_batch(self, points: list[Point], data: Dataset, st: SweepSettings, copies: int = 1) -> int:
        """Samples per run of the whole graph with noise fed at ``points`` (``copies`` draws each)."""
        x, live = self._per_sample(data)
        return self.budget.samples(self._global_need(points, st, x, live, copies), st.batch_size)

    def _global_need(self, points: list[Point], st: SweepSettings, x: np.ndarray, live: float, copies: int = 1) -> float:
        """Per sample: every point's fed noise (alive for the whole run) and the noisy values beside the clean ones."""
        if points and isinstance(points[0], WeightPoint):  # perturbed weights hold no samples
            return live
        sizes = [self._bytes(p.tensor, x) for p in points]
        return live + 2 * max(sizes) + copies * st.spec.draws * sum(sizes)

    def _bytes(self, name: str, x: np.ndarray) -> float:
        """Bytes per sample of value ``name``; 0 where the probe did not see it (nothing to size by)."""
        size = self.routes.sample_bytes(name, x)
        return size if np.isfinite(size) else 0.0

    def round_cache(self) -> RoundCache:
        """A round cache (adaptive scans) holding at most a quarter of the budget's cache share in memory."""
        return RoundCache(min(RAM_BYTES, self.budget.caches // 4))

    def tap_groups(self, points: list[Point], data: Dataset, st: SweepSettings) -> list[list[Point]]:
        """``points`` in order, in groups whose walks read clean values that, kept for the whole
        of ``data``, fit TAP_BYTES and half the budget's cache share (a point that alone does
        not fit is a group of its own)."""
        room, tap_bytes = self._tap_room(), self._tap_bytes(data, st)
        groups: list[list[Point]] = []
        names: set[str] = set()
        for p in points:
            own = set(self._tap_names(p, st.spec, st.walk == "full"))
            if groups and tap_bytes(names | own) <= room:
                groups[-1].append(p)
                names |= own
            else:
                groups.append([p])
                names = own
        return groups

    def _tap_room(self) -> int:
        return min(TAP_BYTES, self.budget.caches // 2)

    def _tap_bytes(self, data: Dataset, st: SweepSettings) -> Callable[[set[str]], float]:
        """Bytes of clean values kept for the whole of ``data`` (batches of ``st``), as a function of
        their names (the three samples the sizes are probed with read once, not per point)."""
        size = self.batch_size(st.batch_size)
        rows = -(-len(data) // size) * size if self.loaded.fixed_batch else len(data)
        x = data.x[:3]
        return lambda names: sum(self.routes.sample_bytes(n, x) for n in names) * rows

    def _tap_names(self, point: Point, spec: NoiseModel, full: bool) -> list[str]:
        """The clean values a walk of ``point`` reads (weights: the layer's input; a model applied in
        numpy: the point's value; Gaussian noise: Routes.tap_names)."""
        if isinstance(point, WeightPoint):
            return [point.data]
        if not isinstance(spec, NoiseSpec):
            return [point.tensor]
        return self.routes.tap_names(point, spec, full)

    @contextlib.contextmanager
    def shared_taps(self, points: list[Point], data: Dataset, st: SweepSettings, revisit: bool = False) -> Iterator[None]:
        """Within: walks of ``points`` on ``data`` (batches of ``st``) read their clean values
        from one prefix run per batch for all of them (a group from :meth:`tap_groups`).
        ``revisit``: a walk comes back to samples (the sequential estimator's trials under
        several repeats), so a point alone keeps its values too when they fit."""
        if isinstance(points[0], WeightPoint) or not isinstance(st.spec, NoiseSpec):
            # nothing to share: weight walks and models applied in numpy read their values themselves
            yield
            return
        names = [n for p in points for n in self.routes.tap_names(p, st.spec, st.walk == "full")]
        if len(points) < 2 and not (revisit and self._tap_bytes(data, st)(set(names)) <= self._tap_room()):
            yield
            return
        self.routes.shared = SharedTaps(self.routes, names, data, self.batch_size(st.batch_size))
        try:
            yield
        finally:
            self.routes.shared = None

    @contextlib.contextmanager
    def shared_draws(self, points: list[Point], data: Dataset, st: SweepSettings) -> Iterator[None]:
        """Within: walks of ``points`` with Gaussian noise take it from one draw per (repeat, batch)
        for all of them, as wide as the widest point needs, kept in a quarter of the budget's
        cache share (engine.draws.WalkDraws): otherwise each point would draw it again."""
        x = data.x[:3]
        width = max((self.routes.sample_numbers(p.tensor, x) for p in points if not isinstance(p, WeightPoint)), default=0)
        if not width or not isinstance(st.spec, NoiseSpec):  # weights and models applied in numpy draw their own
            yield
            return
        self.keep_draws(st.spec.draws * width)
        try:
            yield
        finally:
            self.routes.draws = None

    def keep_draws(self, width: int = 0) -> None:
        """From now on walks take their Gaussian noise from rows kept for every point, at least
        ``width`` numbers a sample wide, in a quarter of the budget's cache share (a worker, which
        is sent its points one at a time, keeps them for its whole scan)."""
        self.routes.draws = WalkDraws(width, self.budget.caches // 4)

    def run_noisy(
        self,
        points: list[Point],
        spec: NoiseSpec,
        x: np.ndarray | Inputs,
        z: dict[int, list[np.ndarray]],
        sa: np.ndarray,
        sm: np.ndarray,
        repeated: bool = False,
    ) -> np.ndarray:
        """Logits of the fed-noise graph: ``z[j]`` feeds ``points[j]``; ``sa``/``sm`` per point."""
        feeds = self.routes.feeds(x)
        for comp, vec in (("sigma_add", sa), ("sigma_mul", sm)):
            if comp in sigma_inputs(spec):
                feeds[SIGMA_INPUT[comp]] = np.asarray(vec, np.float32)
        for j in range(len(points)):
            feeds.update(zip(z_input_names(j, spec), z[j], strict=True))
        return self.routes.noisy(points, spec, repeated).run([self.loaded.output_name], feeds)[0]

    def known_clean(self, data: Dataset) -> np.ndarray | None:
        """The kept clean outputs of ``data`` (see :meth:`clean_outputs`), or None: what workers get."""
        return self._clean[1] if self._clean is not None and self._clean[0] is data.x else None

    def _clean_of(self, data: Dataset) -> Callable[[int, np.ndarray], np.ndarray]:
        """Clean outputs of a batch of ``data``: the kept ones when known, else computed."""
        known = self.known_clean(data)
        if known is None:
            return lambda _first, x: self.clean_logits(x)
        return lambda first, x: known[first : first + len(x)]

    def walk(
        self,
        point: Point,
        data: Dataset,
        st: SweepSettings,
        tick: Callable[[int], None],
        all_points: list[Point] | None = None,
        cache: RoundCache | None = None,
    ) -> Counts:
        """Noise at ``point`` only; ``tick`` gets the number of (σ, repeat) configurations done.

        ``st.walk == "full"`` runs the whole noisy graph over ``all_points`` (the
        straightforward reference) instead of the suffix after the point; σ = 0 results come from
        :meth:`clean_outputs` when kept for ``data``. ``cache``: keeps the clean activations and the noise of each (batch, repeat) for later
        calls on the same point, data and settings (adaptive rounds). Samples per run: at most
        ``st.batch_size``, fewer where the budget needs it."""
        st = replace(st, batch_size=self.walk_batch([point], data, st))
        ev = self.walker(point, data, st, all_points, cache)
        axis = self.output_axis(data.x)
        return sweep(ev, self.batches(data, st.batch_size), st, tick, self._clean_of(data), cache, axis)

    def walker(
        self,
        point: Point,
        data: Dataset,
        st: SweepSettings,
        all_points: list[Point] | None = None,
        cache: RoundCache | None = None,
    ) -> WalkPoint:
        """The evaluation of noise at ``point`` alone (see :meth:`walk`)."""
        if isinstance(point, WeightPoint):  # a weight that several nodes read: perturbed for all of them, whole graph
            if point.shared:
                return WeightGlobal(self.routes, [point], st, self.layer_ranges([point], data, st))
            return WeightWalk(self.routes, point, st, self.layer_ranges([point], data, st))
        if not isinstance(st.spec, NoiseSpec):
            ref = self.activation_reference(point, data, st)
            if self.routes.subgraphs:  # outer-scope reads hide the suffix's inputs: run the graph in two stages
                return NumpyGlobal(self.routes, [point], st, {point.index: ref}, WALK_STREAM)
            return NumpyWalk(self.routes, point, st, ref)
        if st.walk == "full" or self.routes.subgraphs:
            return FullGraph(self.routes, point, all_points or [point], st, self.run_noisy, cache)
        route = self.routes.route(point, st.spec, next(self.batches(data, st.batch_size))[1])
        return (AtOutput if route.session is None else Suffix)(self.routes, point, route, st, cache)

    def global_noise(
        self, points: list[Point], st: SweepSettings, scale: np.ndarray | None = None, data: Dataset | None = None
    ) -> GlobalNoise | WeightGlobal | NumpyGlobal:
        """The evaluation of the same σ at every point of ``points`` (see :meth:`global_sweep`)."""
        if points and isinstance(points[0], WeightPoint):
            return WeightGlobal(self.routes, points, st, self.layer_ranges(points, data, st) if data is not None else None)
        if not isinstance(st.spec, NoiseSpec):
            if data is None:
                raise ValueError("a noise model applied in numpy needs the data its ranges come from")
            return NumpyGlobal(self.routes, points, st, {p.index: self.activation_reference(p, data, st) for p in points})
        return GlobalNoise(self.routes, points, st, self.run_noisy, scale)

    def outcomes(
        self,
        ev: Evaluation,
        data: Dataset,
        st: SweepSettings,
        sigma: float,
        rows: np.ndarray,
        repeat: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(score, non-finite) per sample of ``rows`` (indices into ``data``) under the noise of
        ``ev`` (:meth:`walker`, :meth:`global_noise`) at ``sigma`` and draw ``repeat``: each
        sample gets the numbers the grid's sweep gives it at that σ and repeat (draws keyed by
        sample index, engine.draws), so a subset costs only its own samples; clean outputs from
        :meth:`clean_outputs` when kept. For the sequential estimator
        (wn_onnx.results.sequential)."""
        rows = np.asarray(rows, np.int64)
        sa, sm = st.spec.components(np.array([sigma], np.float64))
        whole = isinstance(ev, GlobalNoise | WeightGlobal | NumpyGlobal)
        within = self.global_batch(ev.points, data, st) if whole else self.walk_batch([ev.point], data, st)
        size, metric = self.batch_size(within), get_metric(st.metric, st.metric_timeout)
        reference, axis = self.known_clean(data), self.output_axis(data.x)
        scores, bad = [], []
        for b, start in enumerate(range(0, len(rows), size)):
            part = rows[start : start + size]
            n = len(part)
            if self.loaded.fixed_batch and n < size:  # a built-in batch: pad with rows that are not scored
                part = np.concatenate([part, np.repeat(part[-1:], size - n)])
            x = data.x[part]
            clean = self.clean_logits(x) if reference is None else reference[part]
            if sa[0] > 0 or sm[0] > 0:
                ev.start(b, part, x)
                noisy = samples_first(next(iter(ev.logits(ev.noise((repeat,)), sa, sm, True))), axis)
            else:  # σ = 0 is the clean result
                noisy = clean
            got, nonfinite = score(metric, clean, noisy, None if data.y is None else data.y[part], n, axis)
            scores.append(got)
            bad.append(nonfinite)
        return np.concatenate(scores), np.concatenate(bad)

    def global_sweep(
        self,
        points: list[Point],
        data: Dataset,
        st: SweepSettings,
        tick: Callable[[int], None],
        cache: RoundCache | None = None,
        scale: np.ndarray | None = None,
    ) -> Counts:
        """The same σ at every point of ``points``, whole noisy graph per evaluation; ``cache``
        keeps each (batch, repeat)'s draws for later calls (adaptive rounds); ``scale``: relative
        σ, one factor per point (its clean std): point k gets σ·scale[k]."""
        st = replace(st, batch_size=self.global_batch(points, data, st))
        ev = self.global_noise(points, st, scale, data)
        axis = self.output_axis(data.x)
        return sweep(ev, self.batches(data, st.batch_size), st, tick, self._clean_of(data), cache, axis)

    def _clean_values(self, names: list[str], data: Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Value name → its clean values on one batch of ``data``, batch after batch (padding rows
        of a fixed batch left out)."""
        names = list(dict.fromkeys(names))
        sample, live = self._per_sample(data)
        sizes = [self._bytes(name, sample) for name in names]
        for _, x, _, n in self.batches(data, self.budget.samples(live + sum(sizes) + 2 * max(sizes), batch_size)):
            values = self.run_values(x, names)
            out = {}
            for name in names:
                v, axis = values[name], self.sample_axis(name, x)
                if axis is not None and v.shape[axis] > n:  # padding rows of a fixed batch
                    v = np.take(v, np.arange(n), axis=axis)
                out[name] = v
            yield out

    def layer_ranges(self, points: list[WeightPoint], data: Dataset, st: SweepSettings) -> dict[int, tuple[float, float]]:
        """Point index → the largest |input| and |output| of its layer over every sample of ``data``
        (the full scales of its DAC and ADC), when the scan has converters; computed once per layer."""
        if not (st.converters and st.converters.active) and not isinstance(st.spec, ConvertersModel):
            return {}
        wanted = [p for p in points if p.index not in self._ranges]
        if wanted:
            top = dict.fromkeys((name for p in wanted for name in (p.data, p.output)), 0.0)
            for values in self._clean_values(list(top), data, st.batch_size):
                top.update((name, max(top[name], float(np.abs(v).max(initial=0.0)))) for name, v in values.items())
            self._ranges.update((p.index, (top[p.data], top[p.output])) for p in wanted)
        return {p.index: self._ranges[p.index] for p in points}

    def activation_reference(self, point: Point, data: Dataset, st: SweepSettings) -> Reference:
        """The largest |value| of ``point``'s clean activations over every sample of ``data`` (or the
        model's ``percentile`` of |value|, from at most 2^20 values per batch taken at a fixed
        stride): the scale that quantisation and int8 storage use. Computed once per point."""
        percentile = getattr(st.spec, "percentile", None)
        key = (point.index, percentile)
        if key not in self._refs:
            top, kept = 0.0, []
            for values in self._clean_values([point.tensor], data, st.batch_size):
                a = np.abs(values[point.tensor].astype(np.float64, copy=False)).ravel()
                top = max(top, float(a.max(initial=0.0)))
                if percentile is not None:
                    kept.append(a[:: max(1, a.size >> 20)])
            if percentile is not None:
                top = float(np.percentile(np.concatenate(kept), percentile))
            self._refs[key] = Reference(top)
        return self._refs[key]

    def never_run(self, points: list[Point], data: Dataset, batch_size: int) -> set[int]:
        """Indices of ``points`` (inside If branches) whose values are empty on every batch of
        ``data``: their branch is never taken for these data (graph_passes/extract.py gives an
        untaken branch's value as an empty tensor), so noise there changes nothing."""
        if not points:
            return set()
        ran: set[int] = set()
        for values in self._clean_values([p.tensor for p in points], data, batch_size):
            ran.update(p.index for p in points if values[p.tensor].size)
        return {p.index for p in points} - ran

    def clean_std(self, points: list[Point], data: Dataset, batch_size: int) -> dict[int, float]:
        """Point index → standard deviation of the point's clean activation over every element
        of every sample of ``data`` (the unit of relative σ; padding rows of a fixed batch left out)."""
        moments = {p.index: np.zeros(3) for p in points}  # count, sum, sum of squares (float64)
        for values in self._clean_values([p.tensor for p in points], data, batch_size):
            for p in points:
                v = values[p.tensor].astype(np.float64, copy=False)
                moments[p.index] += (v.size, v.sum(), np.square(v).sum())
        out = {}
        for index, (n, total, squares) in moments.items():
            mean = total / max(n, 1)
            out[index] = float(np.sqrt(max(squares / max(n, 1) - mean * mean, 0.0)))
        return out

    def plan_accuracy(
        self,
        points: list[Point],
        spec: NoiseSpec,
        sigma: float,
        plan: np.ndarray,
        data: Dataset,
        repeats: int,
        seed: int,
        batch_size: int = 1024,
        metric: str = "top1",
        metric_timeout: float | None = None,
    ) -> np.ndarray:
        """Accuracy (mean ``metric`` score) per repeat with global noise ``sigma`` and point k
        executed ``plan[k]`` times.

        Execution j of point k in repeat r always gets the same draw whatever the plan (common
        random numbers), so plans are compared on the same noise.
        """
        sa, sm = (np.full(len(points), float(v), np.float32) for v in spec.components(sigma))
        correct = np.zeros(repeats, np.float64)
        scorer = get_metric(metric, metric_timeout)
        size = self.global_batch(points, data, SweepSettings(np.ones(1), spec, batch_size=batch_size), int(plan.max()))
        axis = self.output_axis(data.x)
        for b, (first, x, y, n) in enumerate(self.batches(data, size)):
            taps = self.run_values(x, [p.tensor for p in points])
            clean = self.clean_logits(x)
            for r in range(repeats):
                z = {}
                for j, p in enumerate(points):
                    shape, dtype, axis = taps[p.tensor].shape, taps[p.tensor].dtype, self.sample_axis(p.tensor, x)
                    runs = [
                        draw_at(seed, PLAN_STREAM, (p.index, r, e), shape, axis, spec.draws, dtype, first, b)
                        for e in range(int(plan[j]))
                    ]
                    z[j] = [np.stack([run[d] for run in runs]) for d in range(spec.draws)]
                noisy = samples_first(self.run_noisy(points, spec, x, z, sa, sm, repeated=True), axis)
                ok, _ = score(scorer, clean, noisy, y, n, axis)
                correct[r] += ok.sum()
        return correct / len(data)
