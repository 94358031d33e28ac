"""Accuracy under noise with onnxruntime: walking (one point at a time) and global sweeps.

Costs are paid once where possible (DESIGN.md):

* Sessions are built once per scan: one tap session (clean graph exposing the activations a
  suffix needs), one suffix session per walked point, one fed-noise session for global sweeps.
* Walking at point k evaluates only the sub-graph after k, fed with k's clean activation,
  computed once per batch and reused for every (sigma, repeat).
* Noise is drawn with numpy from ``SeedSequence([seed, stream, point, repeat, block])`` in
  blocks of samples: one draw per (point, repeat) reused for every sigma (common random
  numbers), or one per sigma with ``redraw``. Results depend on neither threads, call order nor
  batch size.
* Several sigma values of one (point, repeat, batch) are stacked on the batch axis so
  onnxruntime sees large batches; a sigma of 0 is never evaluated: it *is* the clean result.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from wn_onnx.data import Dataset
from wn_onnx.engine.axes import fixed_sample_axis, probe_batches, sample_axis
from wn_onnx.engine.draws import GLOBAL_STREAM, PLAN_STREAM, WALK_STREAM, draw_at
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import (
    ExtractSuffixPass,
    InsertNoisePass,
    LinearPartPass,
    Point,
    data_dependent,
    suffix_inputs,
    z_input_names,
)
from wn_onnx.graph_passes.extract import affine_chain, has_subgraphs
from wn_onnx.graph_passes.insert_noise import SIGMA_INPUT, StackNoisyInputPass
from wn_onnx.graph_passes.noise_functions import sigma_inputs
from wn_onnx.modelio import LoadedModel
from wn_onnx.noise import NoiseSpec, apply_noise
from wn_onnx.round_cache import RoundCache

CHUNK_ELEMENTS = 1 << 23  # floats per stacked suffix input (32 MB in float32)
PREFIX_CACHE = 4  # clean-prefix sessions kept at once


@dataclass
class Counts:
    """Correct predictions and non-finite outputs per (sigma, repeat), summed over batches."""

    correct: np.ndarray
    nonfinite: np.ndarray
    total: int = 0

    @classmethod
    def zeros(cls, n_sigma: int, repeats: int) -> Counts:
        return cls(np.zeros((n_sigma, repeats), np.int64), np.zeros((n_sigma, repeats), np.int64))

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct / max(self.total, 1)


class BoundInputs:
    """IO binding of a suffix session: activations and noise are placed on the session's device
    once per (batch, draw); each σ chunk then sends only its few σ values (with the CUDA
    provider this removes the host→device copy of the large inputs from every run)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.binding = session.io_binding()
        self.values: dict[str, ort.OrtValue] = {}  # keeps bound buffers alive

    def put(self, name: str, array: np.ndarray) -> None:
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)
        self.values[name] = value
        self.binding.bind_ortvalue_input(name, value)

    def run(self, output: str, small: dict[str, np.ndarray]) -> np.ndarray:
        for name, array in small.items():
            self.binding.bind_cpu_input(name, array)
        self.binding.bind_output(output)
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]


@dataclass
class Route:
    """Where a walked point's noise is evaluated (see :meth:`Engine.route`)."""

    tensor: str  # value the noisy suffix starts from
    chain: ort.InferenceSession | None  # affine chain carrying the noise there, if any
    spec: NoiseSpec  # noise as the suffix applies it
    session: ort.InferenceSession | None
    inputs: list[str]
    stack: bool
    probed: bool = False  # stacking checked against one σ per run (see Engine.stacking_is_exact)


@dataclass
class SweepSettings:
    sigmas: np.ndarray
    spec: NoiseSpec
    repeats: int = 5
    seed: int = 0
    batch_size: int = 1024
    redraw: bool = False  # fresh noise per sigma instead of common random numbers
    walk: str = "suffix"  # "suffix" or "full" (whole noisy graph, the reference path)


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise WnError(
                "--device cuda needs onnxruntime-gpu with CUDA (pip install 'wn-onnx[gpu]'); only CPU is available"
            )
        # CUDA/cuDNN from pip's nvidia-* wheels (torch's, or onnxruntime-gpu[cuda,cudnn]); it prints
        # what it misses, and a provider that then fails to start is reported by Engine.session
        if hasattr(ort, "preload_dlls"):
            with contextlib.redirect_stdout(io.StringIO()):
                ort.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise WnError(f"unknown device {device!r}; use cpu or cuda")


def score(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, non-finite) flags per sample; a non-finite row never counts as correct, and a
    padding row (label -1, see :meth:`Dataset.batches`) counts as neither."""
    flat = logits.reshape(len(logits), -1)
    with np.errstate(all="ignore"):
        finite = np.isfinite(flat).all(axis=1)
        pred = np.argmax(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
    return (pred == labels) & finite, ~finite & (labels >= 0)


class Engine:
    """The onnxruntime sessions of one scan, built once and reused."""

    def __init__(self, loaded: LoadedModel, providers: list[str], threads: int = 0) -> None:
        self.loaded = loaded
        self.providers = providers
        self.options = ort.SessionOptions()
        self.options.log_severity_level = 3
        if threads:
            self.options.intra_op_num_threads = threads
            self.options.inter_op_num_threads = 1
        self._live = data_dependent(loaded.model.graph)
        self._subgraphs = has_subgraphs(loaded.model.graph)
        self._prefixes: dict[tuple[str, ...], ort.InferenceSession] = {}
        self._clean: ort.InferenceSession | None = None
        self._suffix: dict[tuple, tuple[ort.InferenceSession | None, list[str], bool]] = {}
        self._noisy: dict[tuple, ort.InferenceSession] = {}
        self._axes: dict[str, tuple[int | None, int]] | None = None  # value → (sample axis, rank)
        data_in = next(v for v in loaded.model.graph.inputs if v.name == loaded.input_name)
        self.dtype = np.dtype(ir.DataType(data_in.dtype).numpy())

    def session(self, model: ir.Model) -> ort.InferenceSession:
        """A session of ``model`` with this scan's providers and options; failures are WnErrors."""
        proto = ir.to_proto(model)
        try:
            with warnings.catch_warnings():  # a provider that is not there is reported below, once
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(proto.SerializeToString(), self.options, providers=self.providers)
        except Exception as err:
            first = str(err).strip().splitlines()[0]
            raise WnError(f"onnxruntime cannot load the model: {first}") from None
        missing = [p for p in self.providers if p not in session.get_providers()]
        if missing:  # onnxruntime falls back to the CPU silently; a scan claiming the GPU must not
            raise WnError(
                f"onnxruntime could not start {', '.join(missing)} (CUDA/cuDNN libraries or the GPU missing?); "
                "it would silently run on the CPU — use --device cpu, or fix the CUDA setup"
            )
        return session

    def _prefix(self, names: tuple[str, ...]) -> ort.InferenceSession:
        """The part of the clean graph that computes ``names`` from the input (and nothing
        after them); the few most recent ones are kept."""
        if names not in self._prefixes:
            model = self.loaded.fresh()
            ExtractSuffixPass([self.loaded.input_name], list(names))(model)
            self._prefixes[names] = self.session(model)
            while len(self._prefixes) > PREFIX_CACHE:
                del self._prefixes[next(iter(self._prefixes))]
        return self._prefixes[names]

    def run_values(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Clean values ``names`` only: the graph after them is not computed."""
        wanted = tuple(dict.fromkeys(n for n in names if n != self.loaded.input_name))
        out = (
            dict(zip(wanted, self._run(self._prefix(wanted), wanted, {self.loaded.input_name: x}), strict=True))
            if wanted
            else {}
        )
        out[self.loaded.input_name] = x
        return out

    def clean_logits(self, x: np.ndarray) -> np.ndarray:
        """Scored output of the unmodified model (all of onnxruntime's fusions apply)."""
        if self._clean is None:
            self._clean = self.session(self.loaded.fresh())
        return self._run(self._clean, (self.loaded.output_name,), {self.loaded.input_name: x})[0]

    @staticmethod
    def _run(session: ort.InferenceSession, names: tuple[str, ...], feeds: dict) -> list[np.ndarray]:
        try:
            return session.run(list(names), feeds)
        except Exception as err:
            raise WnError(f"onnxruntime failed on the data: {str(err).strip().splitlines()[0]}") from None

    def sample_axis(self, name: str, x: np.ndarray) -> int | None:
        """The axis of value ``name`` that holds the samples (None: none found; see engine.axes),
        probed once for every value of the graph with samples taken from ``x``."""
        if self._axes is None:
            self._axes = self._probe_axes(x)
        return self._axes.get(name, (None, 0))[0]

    def _probe_axes(self, x: np.ndarray) -> dict[str, tuple[int | None, int]]:
        graph = self.loaded.model.graph
        names = list(dict.fromkeys(v.name for n in graph for v in n.outputs if v.name and v in self._live))
        axes: dict[str, tuple[int | None, int]] = {self.loaded.input_name: (0, x.ndim)}
        model = self.loaded.fresh()
        ExtractSuffixPass([self.loaded.input_name], names)(model)
        try:
            session = self.session(model)
            fixed = self.loaded.fixed_batch
            batches = [x[np.arange(fixed) % len(x)]] if fixed else probe_batches(x)
            runs = [session.run(names, {self.loaded.input_name: b}) for b in batches]
        except Exception:  # the graph does not run on other batch sizes: no axis known
            return axes
        for name, values in zip(names, zip(*runs, strict=True), strict=True):
            if all(isinstance(v, np.ndarray) for v in values):
                shapes = [v.shape for v in values]
                axes[name] = (fixed_sample_axis(shapes[0], fixed) if fixed else sample_axis(shapes), len(shapes[0]))
        return axes

    def suffix(
        self, tensor: str, spec: NoiseSpec, x: np.ndarray
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
                model = self.loaded.fresh()
                inputs = suffix_inputs(model.graph, tensor, data_dependent(model.graph))
                ExtractSuffixPass(inputs, [self.loaded.output_name])(model)
                value = model.graph.inputs[0]
                if value.shape is None:  # shape inference lost it; the probe saw its rank
                    value.shape = ir.Shape([None] * self._axes.get(tensor, (None, 0))[1])
                StackNoisyInputPass(tensor, spec, axis or 0)(model)
                stack = (
                    len(inputs) == 1
                    and axis is not None
                    and self.sample_axis(self.loaded.output_name, x) == 0
                    and not isinstance(value.shape[axis], int)
                )
                self._suffix[key] = (self.session(model), inputs, stack)
        return self._suffix[key]

    def route(self, point: Point, spec: NoiseSpec, x: np.ndarray) -> Route:
        """How to evaluate noise at ``point`` (``x``: samples for the axis probe): straight into
        the suffix after it, or — for additive or multiplicative noise followed by affine ops
        (Conv, Gemm, BatchNorm, …) — carried exactly through them, A(x + σ·t) = A(x) + σ·L(t)
        with L the chain's linear part, so the σ loop starts after the chain."""
        key = ("route", point.tensor, spec)
        if key not in self._suffix:
            chain = affine_chain(self.loaded.model.graph, point.tensor, self._live) if spec.kind != "mixed" else []
            if not chain:
                self._suffix[key] = Route(point.tensor, None, spec, *self.suffix(point.tensor, spec, x))
            else:
                model = self.loaded.fresh()
                ExtractSuffixPass([point.tensor], [chain[-1]])(model)
                LinearPartPass()(model)
                additive = NoiseSpec("add")
                self._suffix[key] = Route(
                    chain[-1], self.session(model), additive, *self.suffix(chain[-1], additive, x)
                )
        return self._suffix[key]

    def stacking_is_exact(self, route: Route, start: np.ndarray, axis: int) -> bool:
        """Whether a σ stacked with others on the batch axis gives the outputs it gives alone.

        Not so when the graph after the point mixes the samples of a batch (dynamic
        quantization's per-tensor scale, statistics over the batch): a large σ next to a small
        one would then change the small one's result; or a graph may not take the doubled batch.
        Probed on a few real activations (samples on ``axis``) with σ = (0, 1000) against σ = 0
        alone; where they differ, every σ gets a run of its own."""
        n = min(start.shape[axis], 4)
        x = np.take(start, np.arange(n), axis=axis)
        z = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
        feeds = {route.inputs[0]: x, **dict.fromkeys(("wn_z", "wn_z2")[: route.spec.draws], z)}
        comps = [SIGMA_INPUT[c] for c in sigma_inputs(route.spec)]
        name = (self.loaded.output_name,)
        try:
            alone = self._run(route.session, name, {**feeds, **{c: np.zeros(1, np.float32) for c in comps}})[0]
            both = self._run(route.session, name, {**feeds, **{c: np.array([0, 1e3], np.float32) for c in comps}})[0]
        except WnError:
            return False
        alone = alone.reshape(n, -1).astype(np.float64)
        with np.errstate(all="ignore"):
            both = both.reshape(2, n, -1)[0].astype(np.float64)
        scale = float(np.nanmax(np.abs(alone), initial=0.0)) or 1.0
        return bool(np.allclose(both, alone, rtol=1e-3, atol=1e-4 * scale, equal_nan=True))

    def mixes_samples(self, point: Point, spec: NoiseSpec) -> bool:
        """Whether the graph after ``point`` was found to mix the samples of a batch (its results
        then depend on the batch size); False when not found or not probed."""
        route = self._suffix.get(("route", point.tensor, spec))
        return bool(route is not None and route.probed and not route.stack)

    def release(self, point: Point) -> None:
        """Drop the sessions of a walked point: each holds an onnxruntime arena sized for stacked
        batches, and a walk visits points one after another."""
        self._suffix.clear()

    def noisy(self, points: list[Point], spec: NoiseSpec, repeated: bool = False) -> ort.InferenceSession:
        """The whole graph with fed noise at ``points`` (global sweeps, the reference path);
        ``repeated``: each point averages as many noise samples as its fed ``z`` stacks."""
        key = (tuple(p.tensor for p in points), spec, repeated)
        if key not in self._noisy:
            model = self.loaded.fresh()
            reps = [1] * len(points) if repeated else None
            InsertNoisePass([p.tensor for p in points], spec, source="fed", repetitions=reps)(model)
            self._noisy[key] = self.session(model)
        return self._noisy[key]

    def run_noisy(
        self,
        points: list[Point],
        spec: NoiseSpec,
        x: np.ndarray,
        z: dict[int, list[np.ndarray]],
        sa: np.ndarray,
        sm: np.ndarray,
        repeated: bool = False,
    ) -> np.ndarray:
        """Logits of the fed-noise graph: ``z[j]`` feeds ``points[j]``; ``sa``/``sm`` per point."""
        feeds = {self.loaded.input_name: x}
        for comp, vec in (("sigma_add", sa), ("sigma_mul", sm)):
            if comp in sigma_inputs(spec):
                feeds[SIGMA_INPUT[comp]] = np.asarray(vec, np.float32)
        for j in range(len(points)):
            feeds.update(zip(z_input_names(j, spec), z[j], strict=True))
        return self.noisy(points, spec, repeated).run([self.loaded.output_name], feeds)[0]

    # ------------------------------------------------------------------ sweeps
    def walk(
        self,
        point: Point,
        data: Dataset,
        st: SweepSettings,
        tick: Callable[[int], None],
        all_points: list[Point] | None = None,
        reference: np.ndarray | None = None,
        cache: RoundCache | None = None,
    ) -> Counts:
        """Noise at ``point`` only; ``tick`` gets the number of (σ, repeat) configurations done.

        ``st.walk == "full"`` runs the whole noisy graph over ``all_points`` (the
        straightforward reference) instead of the suffix after the point. ``reference``: the
        clean model's outputs on ``data`` when already known (σ = 0 results, no recomputation).
        ``cache``: keeps the clean activations and the noise of each (batch, repeat) for later
        calls on the same point, data and settings (adaptive rounds)."""
        sa_all, sm_all = st.spec.components(st.sigmas)
        counts = Counts.zeros(len(st.sigmas), st.repeats)
        active = np.flatnonzero((sa_all > 0) | (sm_all > 0))
        idle = np.setdiff1d(np.arange(len(st.sigmas)), active)
        full = st.walk == "full" or self._subgraphs
        ring = all_points or [point]
        probe = next(self.batches(data, st.batch_size))[1]
        if full:
            route = Route(point.tensor, None, st.spec, None, [p.tensor for p in ring], False)
        else:
            route = self.route(point, st.spec, probe)
        axis = self.sample_axis(point.tensor, probe)
        # σ values as the evaluated noise sees them: carried through a chain, σ_add or σ_mul
        # becomes the additive σ at the chain's end
        sa_eval, sm_eval = (
            (sa_all if st.spec.kind == "add" else sm_all, np.zeros_like(sa_all)) if route.chain else (sa_all, sm_all)
        )
        for b, (first, x, y) in enumerate(self.batches(data, st.batch_size)):
            taps = self._taps(x, [point.tensor, *route.inputs], cache, b)
            self._add_clean(
                counts, idle, self.clean_logits(x) if reference is None else reference[first : first + len(x)], y
            )
            xk = taps[point.tensor]
            start_value = taps[route.tensor]
            bound = None
            if route.stack and not route.probed and route.session is not None:
                route.stack = self.stacking_is_exact(route, start_value, self.sample_axis(route.tensor, probe))
                route.probed = True
            per_chunk = max(1, CHUNK_ELEMENTS // max(start_value.size, 1)) if route.stack and not st.redraw else 1
            for r in range(st.repeats):
                for start in range(0, len(active), per_chunk):
                    idx = active[start : start + per_chunk]
                    if start == 0 or st.redraw:
                        key = (r, int(idx[0])) if st.redraw else (r,)
                        make = functools.partial(self._walk_noise, st, point, route, key, xk, axis, first, b)
                        noise = make() if cache is None or st.redraw else cache.get(("noise", b, r), make)
                    if full:
                        hot = np.array([p is point for p in ring], np.float32)
                        feed = {
                            j: (noise if p is point else [np.zeros_like(taps[p.tensor])] * st.spec.draws)
                            for j, p in enumerate(ring)
                        }
                        logits = [self.run_noisy(ring, st.spec, x, feed, hot * sa_all[s], hot * sm_all[s]) for s in idx]
                    elif route.session is None:  # noise lands on the scored output: apply it directly
                        shape = (len(idx),) + (1,) * start_value.ndim
                        second = noise[1][None] if len(noise) > 1 else None
                        with np.errstate(all="ignore"):  # fp16 overflow: counted as non-finite, not printed
                            logits = apply_noise(
                                start_value[None],
                                noise[0][None],
                                second,
                                sa_eval[idx].reshape(shape),
                                sm_eval[idx].reshape(shape),
                                route.spec,
                            )
                    else:
                        if bound is None:  # clean activations go to the session's device once per batch
                            bound = BoundInputs(route.session)
                            for n in route.inputs:
                                bound.put(n, taps[n])
                        if start == 0 or st.redraw:  # noise once per draw, not per σ chunk
                            for n, arr in zip(("wn_z", "wn_z2"), noise, strict=False):
                                bound.put(n, arr)
                        sigmas = {
                            SIGMA_INPUT[comp]: values[idx].astype(np.float32)
                            for comp, values in (("sigma_add", sa_eval), ("sigma_mul", sm_eval))
                            if comp in sigma_inputs(route.spec)
                        }
                        out = bound.run(self.loaded.output_name, sigmas)
                        logits = out.reshape((len(idx), len(x), -1))
                    for s, lg in zip(idx, logits, strict=True):
                        ok, bad = score(lg, y)
                        counts.correct[s, r] += int(ok.sum())
                        counts.nonfinite[s, r] += int(bad.sum())
                    tick(len(idx))
        return counts

    def batches(self, data: Dataset, size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(index of the first sample, inputs, labels) per batch; a model exported with a fixed
        batch gets exactly that many samples per run, the last batch padded (labels -1)."""
        size = self.batch_size(size)
        for b, (x, y) in enumerate(data.batches(size, pad=self.loaded.fixed_batch is not None)):
            yield b * size, x, y

    def batch_size(self, requested: int) -> int:
        """Samples per run: ``requested``, unless the model's batch is built in."""
        return self.loaded.fixed_batch or requested

    def _taps(self, x: np.ndarray, names: list[str], cache: RoundCache | None, b: int) -> dict[str, np.ndarray]:
        """:meth:`run_values` of batch ``b``, kept in ``cache`` when given (the input itself is not stored)."""
        if cache is None:
            return self.run_values(x, names)
        inner = [n for n in dict.fromkeys(names) if n != self.loaded.input_name]

        def compute() -> list[np.ndarray]:
            values = self.run_values(x, inner)
            return [values[n] for n in inner]

        return {self.loaded.input_name: x, **dict(zip(inner, cache.get(("taps", b), compute), strict=True))}

    def _walk_noise(
        self,
        st: SweepSettings,
        point: Point,
        route: Route,
        key: tuple[int, ...],
        xk: np.ndarray,
        axis: int | None,
        first: int,
        batch: int,
    ) -> list[np.ndarray]:
        """The draw ``key`` of ``point``'s noise for batch ``batch`` (samples ``first…`` on
        ``axis``), as the route evaluates it: carried through the chain's linear part when
        there is one."""
        z = draw_at(st.seed, WALK_STREAM, (point.index, *key), xk.shape, axis, st.spec.draws, xk.dtype, first, batch)
        if route.chain is None:
            return z
        t = z[0] if st.spec.kind == "add" else xk * z[0]
        return self._run(route.chain, (route.chain.get_outputs()[0].name,), {point.tensor: t})

    @staticmethod
    def _add_clean(counts: Counts, idle: np.ndarray, logits: np.ndarray, y: np.ndarray) -> None:
        """σ = 0 configurations get the clean result; the batch joins the sample count."""
        ok, bad = score(logits, y)
        counts.total += int(np.count_nonzero(y >= 0))
        counts.correct[idle] += int(ok.sum())
        counts.nonfinite[idle] += int(bad.sum())

    def global_sweep(
        self,
        points: list[Point],
        data: Dataset,
        st: SweepSettings,
        tick: Callable[[int], None],
        reference: np.ndarray | None = None,
        cache: RoundCache | None = None,
    ) -> Counts:
        """The same σ at every point of ``points``, whole noisy graph per evaluation; ``cache``
        keeps each (batch, repeat)'s draws for later calls (adaptive rounds)."""
        sa_all, sm_all = st.spec.components(st.sigmas)
        counts = Counts.zeros(len(st.sigmas), st.repeats)
        active = np.flatnonzero((sa_all > 0) | (sm_all > 0))
        idle = np.setdiff1d(np.arange(len(st.sigmas)), active)
        ones = np.ones(len(points), np.float32)
        for b, (first, x, y) in enumerate(self.batches(data, st.batch_size)):
            # activation shapes, only needed when a draw is made
            taps = functools.cache(functools.partial(self.run_values, x, [p.tensor for p in points]))
            self._add_clean(
                counts, idle, self.clean_logits(x) if reference is None else reference[first : first + len(x)], y
            )
            for r in range(st.repeats):
                for n, s in enumerate(active):
                    if n == 0 or st.redraw:
                        key = (r, int(s)) if st.redraw else (r,)
                        make = functools.partial(self._global_noise, points, st, key, taps, x, first, b)
                        flat = make() if cache is None or st.redraw else cache.get(("z", b, r), make)
                        zs = {j: flat[j * st.spec.draws : (j + 1) * st.spec.draws] for j in range(len(points))}
                    ok, bad = score(self.run_noisy(points, st.spec, x, zs, ones * sa_all[s], ones * sm_all[s]), y)
                    counts.correct[s, r] += int(ok.sum())
                    counts.nonfinite[s, r] += int(bad.sum())
                    tick(1)
        return counts

    def _global_noise(
        self,
        points: list[Point],
        st: SweepSettings,
        key: tuple[int, ...],
        taps: Callable[[], dict],
        x: np.ndarray,
        first: int,
        batch: int,
    ) -> list[np.ndarray]:
        """Draw ``key`` at every point, point after point (``spec.draws`` arrays each)."""
        values = taps()
        out: list[np.ndarray] = []
        for p in points:
            v, axis = values[p.tensor], self.sample_axis(p.tensor, x)
            out += draw_at(st.seed, GLOBAL_STREAM, (p.index, *key), v.shape, axis, st.spec.draws, v.dtype, first, batch)
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
    ) -> np.ndarray:
        """Accuracy per repeat with global noise ``sigma`` and point k executed ``plan[k]`` times.

        Execution j of point k in repeat r always gets the same draw whatever the plan (common
        random numbers), so plans are compared on the same noise.
        """
        sa, sm = (np.full(len(points), float(v), np.float32) for v in spec.components(sigma))
        correct = np.zeros(repeats, np.int64)
        for b, (first, x, y) in enumerate(self.batches(data, 1024)):
            taps = self.run_values(x, [p.tensor for p in points])
            for r in range(repeats):
                z = {}
                for j, p in enumerate(points):
                    shape, dtype, axis = taps[p.tensor].shape, taps[p.tensor].dtype, self.sample_axis(p.tensor, x)
                    runs = [
                        draw_at(seed, PLAN_STREAM, (p.index, r, e), shape, axis, spec.draws, dtype, first, b)
                        for e in range(int(plan[j]))
                    ]
                    z[j] = [np.stack([run[d] for run in runs]) for d in range(spec.draws)]
                ok, _ = score(self.run_noisy(points, spec, x, z, sa, sm, repeated=True), y)
                correct[r] += int(ok.sum())
        return correct / len(data)
