"""A whole scan: model + data + noise → accuracy per (point, σ, repeat) → μ per point → report.

The report is a dict in the JSON schema of docs/report-schema.md; wn_onnx.Report is its typed view.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from wn_onnx import __version__
from wn_onnx.engine import Counts, Engine, SweepSettings, providers_for
from wn_onnx.engine.draws import ORDER_STREAM
from wn_onnx.engine.memory import Share
from wn_onnx.engine.sweep import Evaluation
from wn_onnx.errors import ConfigError, DataError, ModelError, PluginError, WnError
from wn_onnx.graph_passes import Point, select_points
from wn_onnx.graph_passes.extract import has_subgraphs
from wn_onnx.graph_passes.weights import points_on
from wn_onnx.io.config import MAX_PARALLEL
from wn_onnx.io.data import Dataset, Inputs, check_shape
from wn_onnx.io.model import LoadedModel, load_model
from wn_onnx.metrics import get_metric, score
from wn_onnx.noise import TARGETS, NoiseModel, NoiseSpec, noise_json, plugin_digest, plugin_source
from wn_onnx.noise.converters import ConvertersModel
from wn_onnx.noise.quant import bits_of
from wn_onnx.results.fit import curve_json as fit_curve_json
from wn_onnx.results.schema import FAILED, NOT_RUN, SCHEMA_VERSION
from wn_onnx.results.sequential import estimate
from wn_onnx.results.store import CurveStore, digest

if TYPE_CHECKING:
    from wn_onnx.cluster import Cluster

MODES = ("walking", "global", "both")
SIGMA_SCALES = ("absolute", "std")
ESTIMATORS = ("grid", "sequential")
FEED_VALUES = 16  # a fed constant of at most this many values is recorded as they are


@dataclass
class ScanRequest:
    mode: str = "both"
    at: str | None = None
    label_free: bool = False
    device: str = "cpu"
    threads: int = 0
    global_after_bn: bool = True  # inject after BatchNormalization in the global sweep too
    adaptive: bool = False
    tolerance: float = 0.05  # adaptive and sequential: stop once mu_err <= tolerance * mu
    jobs: int = 1  # walking points spread over this many processes
    granularity: str = "layer"  # one point per layer / function, or "op": one per op (graph_passes.layers)
    sigma_scale: str = "absolute"  # or "std": σ in units of each point's clean activation std
    estimator: str = "grid"  # grid: every σ on every sample; sequential: wn_onnx.results.sequential
    memory: int | None = None  # peak resident bytes of the scan and its local workers together (None: engine.memory's default)
    workers: int = 0  # walking points (and global σ chunks) over a Dask LocalCluster of this many workers
    scheduler: str | None = None  # … or over the Dask cluster of this scheduler address
    on: str = "activations"  # or "weights": the initializers Conv/ConvTranspose/Gemm/MatMul multiply by

    def __post_init__(self) -> None:
        """A request is checked where it is made, so every caller (CLI, API, workers) gets the same errors."""
        if self.on not in TARGETS:
            raise ConfigError(f"unknown target {self.on!r}; choose activations or weights")
        if self.mode not in MODES:
            raise ConfigError(f"unknown scan mode {self.mode!r}; choose walking, global or both")
        if not 1 <= self.jobs <= MAX_PARALLEL:
            raise ConfigError(f"jobs must lie in [1, {MAX_PARALLEL}] (4 × the cores)")
        if not 0 <= self.workers <= MAX_PARALLEL:
            raise ConfigError(f"workers must lie in [0, {MAX_PARALLEL}] (4 × the cores)")
        if not 0 < self.tolerance < 1:
            raise ConfigError("tolerance must lie in (0, 1)")
        if self.sigma_scale not in SIGMA_SCALES:
            raise ConfigError(f"unknown σ scale {self.sigma_scale!r}; choose absolute or std")
        if self.granularity not in ("layer", "op"):
            raise ConfigError(f"unknown granularity {self.granularity!r}; choose layer or op")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {self.estimator!r}; choose grid or sequential")
        if self.estimator == "sequential" and self.adaptive:
            raise ConfigError("the adaptive grid and the sequential estimator (which places its own σ) exclude each other")


@dataclass
class Levels:
    """What one curve needs besides its counts: a_min (the metric's chance level), the clean
    accuracy, the variance of the clean per-sample scores (the clean value's error when scores
    are fractional), and whether each repeat is one draw shared by every sample (weight noise:
    fit.fit_curve's repeat_shift)."""

    chance: float
    clean: float
    clean_variance: float | None = None  # None: 0/1 scores, whose variance is the binomial
    repeat_shift: bool = False


def curve_json(sigmas: np.ndarray, spec: NoiseModel, counts: Counts, base: Levels) -> dict:
    """The shared curve writer (:func:`wn_onnx.results.fit.curve_json`, on the model's strengths)
    plus the mixed-noise components, or the levels of an axis whose damage grows as it falls (bits)."""
    out = fit_curve_json(sigmas, counts.accuracy, counts.nonfinite, base.chance, counts.total, base.clean,
                         mean_squares=counts.squares / max(counts.total, 1), clean_variance=base.clean_variance,
                         repeat_shift=base.repeat_shift)  # fmt: skip
    if isinstance(spec, NoiseSpec) and spec.kind == "mixed":
        a_add, a_mul = spec.components(sigmas)
        out["sigma_add"] = [float(s) for s in a_add]
        out["sigma_mul"] = [float(s) for s in a_mul]
    if spec.axis.more == "down":
        out.update(level_fields(spec, sigmas, counts.accuracy, base.clean, out))
    return out


WITHIN_CLEAN = 0.01  # "fewest bits": mean accuracy within this (absolute) of the clean accuracy


def level_fields(spec: NoiseModel, sigmas: np.ndarray, accuracy: np.ndarray, clean: float, curve: dict) -> dict:
    """A falling axis's own numbers (strength 2^-level): the levels, μ and its error in levels
    (first order), and for bit widths the fewest bits whose accuracy, and every wider one's, stays
    within WITHIN_CLEAN of the clean accuracy (None when no measured width does)."""
    levels = spec.axis.level(sigmas)
    mu, err = curve["mu"], curve["mu_err"]
    out: dict = {"levels": [float(v) for v in levels]}
    out["mu_level"] = None if not mu else float(spec.axis.level(mu))
    out["mu_level_err"] = None if not mu or err is None else float(err / (mu * np.log(2.0)))
    if spec.axis.integer:
        good = np.asarray(accuracy).mean(axis=1) >= clean - WITHIN_CLEAN  # sigmas ascending: levels descending
        bad = np.flatnonzero(~good)
        first_bad = bad.min() if bad.size else len(sigmas)
        out["fewest_bits"] = None if first_bad == 0 else bits_of(float(sigmas[first_bad - 1]))
    return out


def sequential_curve(
    engine: Engine,
    ev: Evaluation,
    data: Dataset,
    st: SweepSettings,
    base: Levels,
    tolerance: float,
    key: list[int],
    scale: float | None = None,
) -> dict:
    """μ of one curve by the sequential estimator (wn_onnx.results.sequential) from per-sample outcomes
    of ``ev`` at σ in the grid's range; ``key`` makes the curve's sample order its own;
    ``scale``: relative σ of a walked point (σ in units of this std, as the grid's curve keeps it)."""
    swept = st.sigmas[np.any(np.stack(st.spec.components(st.sigmas)) > 0, axis=0)]

    def outcomes(sigma: float, rows: np.ndarray, repeat: int) -> tuple[np.ndarray, np.ndarray]:
        return engine.outcomes(ev, data, st, sigma * (1.0 if scale is None else scale), rows, repeat)

    return estimate(outcomes, len(data), st.repeats, float(swept[swept > 0].min()), float(swept.max()), base.clean,
                    base.chance, len(swept) * len(data) * st.repeats, tolerance, [st.seed, ORDER_STREAM, *key],
                    base.clean_variance)  # fmt: skip


def check_target(req: ScanRequest, st: SweepSettings, loaded: LoadedModel) -> None:
    """Where the noise model can act, and which scan settings apply there, one clear line each."""
    spec = st.spec
    if st.converters is not None and st.converters.active and req.on != "weights":
        raise ConfigError("converters (--dac-bits, --adc-bits, --out-noise) belong to analog layers: scan --on weights")
    if isinstance(spec, ConvertersModel) and st.converters is not None and st.converters.dac_bits and st.converters.adc_bits:
        raise ConfigError("the converters model sweeps the bits that --dac-bits and --adc-bits fix: leave one free")
    if req.on not in spec.targets:
        hint = ": add --on weights" if spec.targets == ("weights",) else ""
        raise ConfigError(f"noise model {spec.name!r} acts on {' and '.join(spec.targets)}, not on {req.on}{hint}")
    if req.on == "activations" and getattr(spec, "weight_scale", None) is not None:
        raise ConfigError("--weight-scale applies to weight noise (--on weights)")
    if req.on == "activations" and not isinstance(spec, NoiseSpec) and req.mode != "walking" and has_subgraphs(loaded.model.graph):
        raise ConfigError(f"the global sweep of noise model {spec.name!r} cuts the graph at its points, which a graph "
                          "with control flow (If, Loop, Scan) does not allow: walk its points (--mode walking)")  # fmt: skip
    if req.on == "activations" and not isinstance(spec, NoiseSpec) and req.estimator == "sequential":
        raise ConfigError(f"noise model {spec.name!r} on activations runs with the grid estimator only")
    if req.on == "weights" and getattr(spec, "percentile", None) is not None:
        raise ConfigError("--percentile clips activations; a weight's quantiser takes its largest |w| (--per-tensor for one scale)")
    random = not spec.deterministic or (st.converters is not None and st.converters.out_noise > 0)
    if req.on == "weights" and random and st.repeats < 2:
        raise ConfigError("weight noise is one draw per repeat (one chip): one repeat cannot tell the spread between "
                          "chips; give --repeats 2 or more (default 10)")  # fmt: skip
    if req.on == "weights" and req.estimator == "sequential":
        raise ConfigError("the sequential estimator treats samples as independent trials; weight noise is one draw "
                          "per repeat that all samples share: use the grid estimator")  # fmt: skip


def check_estimator(req: ScanRequest, st: SweepSettings) -> None:
    """The sequential estimator's conditions on the sweep settings, one clear line each."""
    if req.estimator == "grid":
        return
    if st.redraw:
        raise ConfigError("fresh noise per σ applies to the grid; the sequential estimator draws per (sample, repeat)")
    if st.spec.kind == "mixed" and st.spec.ratio is None:
        raise ConfigError("the sequential estimator needs a curve that starts clean (σ = 0): mixed noise with a "
                          "σ ratio, not a fixed component")  # fmt: skip
    if not np.any(st.sigmas > 0):
        raise ConfigError("the sequential estimator needs a σ range: the grid has no σ > 0")


COARSE_POINTS = 9  # adaptive: evenly spaced grid indices measured first


def measure_curve(
    measure: Callable[[np.ndarray], Counts], st: SweepSettings, base: Levels, adaptive: bool, tolerance: float
) -> dict:
    """Measure one curve on the full grid, or adaptively: a coarse subset of the grid, then the
    midpoints of every interval where accuracy still moves by more than a tenth of the drop;
    once the drop is resolved, halve the gaps next to μ (or inside a bracket) until the fit is
    ``ok`` with ``mu_err <= tolerance * mu`` or the grid has no σ left there; ``adaptive.converged``
    says which, and a curve that stopped short says so in its note. With common random numbers
    each measured σ gets exactly the numbers the full grid would."""
    grid = st.sigmas
    if not adaptive:
        return curve_json(grid, st.spec, measure(grid), base)
    rows: dict[int, Counts] = {}
    pending = sorted({int(i) for i in np.linspace(0, len(grid) - 1, min(COARSE_POINTS, len(grid))).round()})
    precise = False
    while pending:
        counts = measure(grid[pending])
        rows.update({i: counts.rows([j]) for j, i in enumerate(pending)})
        done = sorted(rows)
        merged = Counts.stacked([rows[i] for i in done])
        curve = curve_json(grid[done], st.spec, merged, base)
        if curve["status"] in ("not-reached", "no-drop-from-start"):
            precise = True  # a bound is the answer; a finer grid cannot move it
            break
        precise = curve["status"] == "ok" and curve["mu_err"] is not None and curve["mu_err"] <= tolerance * curve["mu"]
        if precise:
            break
        y = merged.accuracy.mean(axis=1)
        step = 0.1 * max(base.clean - base.chance, 1e-6)
        pending = sorted(
            {
                (a + b) // 2
                for a, b, ya, yb in zip(done, done[1:], y, y[1:], strict=False)
                if b - a > 1 and abs(ya - yb) > step
            }
        )
        if not pending:  # the drop is resolved to this resolution: halve the gaps around μ (or the bracket)
            lo, hi = curve["fit"]["bracket"] or [curve["mu"], curve["mu"]]
            lo = curve["mu"] if lo is None else lo
            hi = curve["mu"] if hi is None else hi
            first, last = int(np.searchsorted(grid[done], lo)), int(np.searchsorted(grid[done], hi))
            around = done[max(first - 2, 0) : last + 2]
            pending = sorted({(a + b) // 2 for a, b in itertools.pairwise(around) if b - a > 1})
    curve["adaptive"] = {"evaluations": len(rows), "grid": len(grid), "tolerance": tolerance, "converged": precise}
    if not precise:
        ratio = "" if not curve["mu_err"] or not curve["mu"] else f" (μ_err/μ = {curve['mu_err'] / curve['mu']:.2g})"
        curve["fit"]["note"] = (f"{curve['fit']['note']}. --adaptive did not reach the tolerance {tolerance:g}{ratio}: "
                                "no grid σ left near μ.").lstrip(". ")  # fmt: skip
    return curve


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan; ``report`` holds what was finished, marked ``"partial": true``."""

    def __init__(self, report: dict) -> None:
        super().__init__("scan interrupted")
        self.report = report


def run_scan(
    loaded: LoadedModel,
    data: Dataset,
    st: SweepSettings,
    req: ScanRequest,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    store: CurveStore | None = None,
    resume: bool = False,
) -> dict:
    """Run the sweeps ``req`` asks for and return the report dict.

    ``progress(description, total)`` returns a ``tick(n)`` callback; pass None for silence.
    Finished curves go to ``store`` as they complete; with ``resume`` the ones already there
    are taken instead of recomputed. Ctrl-C raises :class:`ScanInterrupted` with the partial
    report.
    """
    if req.sigma_scale == "std" and (st.spec.kind != "add" or req.on == "weights"):
        raise ConfigError("σ relative to the activation std applies to additive noise on activations "
                          "(multiplicative noise is relative already, additive weight noise is relative to max|W|)")  # fmt: skip
    check_estimator(req, st)
    noisy_outputs = st.converters is not None and st.converters.out_noise > 0
    if st.spec.deterministic and not noisy_outputs:  # every repeat would give the same numbers
        st = replace(st, repeats=1)
    st = replace(st, top=float(np.max(st.sigmas)))  # draws shared by every strength of the grid, adaptive rounds too
    engine = Engine(loaded, providers_for(req.device), req.threads, req.memory)
    check_target(req, st, loaded)
    selected = select_points(points_on(loaded.model, req.on, req.granularity, loaded.path), req.at)
    chosen = [p for p in selected if not p.unsupported]
    skipped = [{**p.to_json(), "reason": p.unsupported} for p in selected if p.unsupported]
    if not chosen:
        raise WnError(f"no selected point can carry noise: point {selected[0].index}: {selected[0].unsupported}")

    data, base, facts = clean_pass(engine, data, st.metric, st.batch_size, req.label_free, st.metric_timeout)
    base = replace(base, repeat_shift=req.on == "weights")
    unrun = engine.never_run([p for p in chosen if p.path], data, st.batch_size)  # inside If branches not taken
    not_run = [{**p.to_json(), "status": NOT_RUN, "reason": f"never computed for these data (the {p.path} is not taken)"}
               for p in chosen if p.index in unrun]  # fmt: skip
    chosen = [p for p in chosen if p.index not in unrun]
    if not chosen:
        raise WnError(f"no selected point is computed for these data: every one lies in an If branch not taken "
                      f"({not_run[0]['path']}, …)")  # fmt: skip
    silent = progress or (lambda _d, _t: lambda _n: None)
    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "wn_onnx_version": __version__,
        "model": loaded.path,
        "model_digest": loaded.content_digest(),
        "data": {"source": data.source, "samples": len(data), "label_free": req.label_free},
        "noise": noise_json(st.spec),
        **({} if req.on == "activations" else {"on": req.on}),
        **({} if isinstance(st.spec, NoiseSpec) else {"axis": st.spec.axis.to_json()}),
        **({"deterministic": True} if st.spec.deterministic and not noisy_outputs else {}),
        **({"converters": st.converters.to_json()} if st.converters is not None and st.converters.active else {}),
        "mode": req.mode,
        "seed": st.seed,
        "repeats": st.repeats,
        "common_random_numbers": not st.redraw,
        "output": loaded.output_name,
        "device": req.device,
        "providers": engine.providers,
        **facts,
        "granularity": req.granularity,
        "sigma_scale": req.sigma_scale,
        "estimator": req.estimator,
        "points": [],
        "global": None,
    }
    if skipped:
        report["skipped"] = skipped
    if not_run:
        report["not_run"] = not_run
    if isinstance(data.x, Inputs) and data.x.fed:
        report["data"]["feeds"] = {n: _constant(v) for n, v in data.x.constants().items()}
    # relative σ: each point's clean activation std on the data; the noise there is σ·std
    scales = engine.clean_std(chosen, data, st.batch_size) if req.sigma_scale == "std" else None
    relative = ["sigma_scale=std"] if req.sigma_scale == "std" else []  # absolute: the hashes of earlier versions
    relative += [] if req.estimator == "grid" else [f"estimator={req.estimator}"]  # grid: likewise
    relative += [] if req.on == "activations" else [f"on={req.on}"]  # likewise
    relative += [] if st.converters is None or not st.converters.active else [f"converters={st.converters.to_json()}"]
    relative += [] if plugin_source(st.spec) is None else [f"plugin={plugin_digest(st.spec)}"]  # its code, not only its name
    code = get_metric(st.metric, st.metric_timeout).source  # a plug-in's file: an edited plug-in is computed again
    config = digest(report["model_digest"], loaded.output_name, *_input_parts(data.x), data.y, req.label_free, st.spec.to_json(),
                    st.sigmas, st.repeats, st.seed, st.redraw, st.walk, req.adaptive, req.tolerance, __version__, *relative,
                    *([] if st.metric == "top1" else [f"metric={st.metric}"]), *([code] if code else []))  # fmt: skip
    report["config_hash"] = config
    # stored curves are also keyed by what may change the arithmetic without changing the report's
    # settings: the batch size (graphs that mix samples) and the device
    stored = digest(config, st.batch_size, req.device)
    cluster = None
    if req.workers or req.scheduler:
        from wn_onnx.cluster import Cluster

        cluster = Cluster.start(req, engine, data)
    try:
        if req.mode in ("walking", "both"):
            tick = silent(f"walking {len(chosen)} points", len(chosen))
            keys = {p.index: digest(stored, "point", p.index, p.tensor, req.granularity) for p in chosen}
            done = {p.index: stored_curve(store, keys[p.index], base, len(data), req) for p in chosen} if resume else {}
            todo = [p for p in chosen if done.get(p.index) is None]
            tick(len(chosen) - len(todo))
            finished = {i: c for i, c in done.items() if c is not None}

            def keep(point: Point, curve: dict) -> None:
                finished[point.index] = curve
                report["points"] = [finished[p.index] for p in chosen if p.index in finished]
                if store is not None and curve["status"] != FAILED:  # a resumed scan tries it again
                    store.put(keys[point.index], f"point {point.index}", curve)

            report["points"] = [finished[p.index] for p in chosen if p.index in finished]
            walk_points(engine, todo, data, st, req, base, tick, keep, scales, cluster)
            if all(p["status"] == FAILED for p in report["points"]):
                first = report["points"][0]
                raise WnError(f"every walked point failed; point {first['index']}: {first['reason']}")
        if req.mode in ("global", "both"):
            where = chosen if req.global_after_bn else [p for p in chosen if p.op_type != "BatchNormalization"]
            if not where:
                raise WnError("the global sweep has no point left (all selected points are BatchNormalization outputs)")
            tick = silent(f"global noise at {len(where)} points", 1)
            key = digest(stored, "global", [p.index for p in where], req.granularity)
            curve = stored_curve(store, key, base, len(data), req) if resume else None
            if curve is None:
                scale = None if scales is None else np.array([scales[p.index] for p in where])
                if req.estimator == "sequential":
                    ev = engine.global_noise(where, st, scale, data)
                    curve = {"points": [p.index for p in where],
                             **sequential_curve(engine, ev, data, st, base, req.tolerance, [1])}  # fmt: skip
                else:
                    with engine.round_cache() if req.adaptive else contextlib.nullcontext() as cache:

                        def measure(sigmas: np.ndarray) -> Counts:
                            sub = replace(st, sigmas=sigmas)
                            if cluster is not None:
                                return cluster.global_sweep(where, sub, scale)
                            return engine.global_sweep(where, data, sub, lambda _n: None, cache, scale)

                        curve = {
                            "points": [p.index for p in where],
                            **measure_curve(measure, st, base, req.adaptive, req.tolerance),
                        }
                if scales is not None:
                    curve["activation_std"] = [scales[p.index] for p in where]
                if store is not None:
                    store.put(key, "global", curve)
            report["global"] = curve
            tick(1)
    except KeyboardInterrupt:
        report["partial"] = True
        raise ScanInterrupted(report) from None
    finally:
        if cluster is not None:
            cluster.close()
    report["partial"] = False
    return report


def stored_curve(store: CurveStore | None, key: str, base: Levels, samples: int, req: ScanRequest) -> dict | None:
    """The curve stored under ``key`` when its fit is the fit of its own accuracies (a row edited to
    another μ or status is computed again, never reported); the sequential estimator's curves are
    not grid fits and are taken as stored."""
    curve = None if store is None else store.get(key)
    if curve is None or req.estimator != "grid":
        return curve
    accuracy = np.asarray(curve["accuracy"], np.float64)
    nonfinite = np.asarray(curve.get("nonfinite") or np.zeros(accuracy.shape, np.int64))
    variance = curve.get("score_variance")
    refit = fit_curve_json(np.asarray(curve["sigmas"], np.float64), accuracy, nonfinite, base.chance, samples, base.clean,
                           clean_variance=base.clean_variance, repeat_shift=base.repeat_shift,
                           variance=None if variance is None else np.asarray(variance, np.float64))  # fmt: skip
    return curve if all(refit[k] == curve[k] for k in ("mu", "mu_err", "a_max", "a_min", "status")) else None


def clean_pass(
    engine: Engine, data: Dataset, metric_name: str, batch_size: int, label_free: bool,
    metric_timeout: float | None = None,
) -> tuple[Dataset, Levels, dict]:
    """The σ = 0 run over ``data``: (data with its inputs checked and its labels in the metric's
    form — None label-free —, the curve base, the report's facts: metric, clean accuracy, classes,
    chance); the engine keeps the clean outputs for every later σ = 0 (Engine.clean_outputs). An
    output the metric cannot score is refused here, its shape named."""
    loaded, metric = engine.loaded, get_metric(metric_name, metric_timeout)
    if not label_free and data.y is None:
        raise DataError(f"{data.source}: no labels y (score agreement with the clean model instead: label-free)")
    data = check_shape(data, loaded)
    clean = engine.clean_outputs(data, batch_size)[: len(data)]  # the engine keeps them for every σ = 0
    where = f"{loaded.path}: output {loaded.output_name!r}"
    mixed = engine.rows_interact(data, batch_size)
    if mixed is not None:
        raise ModelError(f"{where}: the rows of a batch interact (sample {mixed[0]} alone differs from it in a batch by "
                         f"{mixed[1]:.2g} of the outputs' range): results would depend on the samples per run; "
                         "a batch size of 1 (--batch-size 1) scans it exactly")  # fmt: skip
    try:
        classes = metric.classes(clean.shape)
        metric.check_outputs(clean, where)
    except WnError as err:
        raise type(err)(f"{where}: {err}") from None
    labels = None if label_free else metric.labels(data.y, clean.shape, data.source)
    ok, bad = score(metric, clean, clean, labels, len(clean))
    if bad.all():
        raise ModelError(f"{where}: NaN/Inf for every one of the {len(bad)} samples without noise: nothing to measure")
    chance, clean_score = metric.chance(clean, labels), float(ok.mean())
    if clean_score <= chance:  # one class for every sample, or no better than guessing: nothing can fall
        level = "what outputs from other samples score" if label_free or metric.plugin else "the metric's chance level"
        nonfinite = f", {int(bad.sum())} of {len(bad)} samples NaN/Inf" if bad.any() else ""
        raise DataError(
            f"{data.source}: the clean score {clean_score:.3g}{nonfinite} is not above a_min {chance:.3g} ({level}): "
            f"no drop to measure{'; give labels' if label_free else ''}"
        )
    facts = {"metric": metric_name, "clean_accuracy": clean_score, "clean_nonfinite": int(bad.sum()),
             "num_classes": classes, "chance": chance}  # fmt: skip
    return Dataset(data.x, labels, data.source), Levels(chance, clean_score, None if np.all((ok == 0) | (ok == 1)) else float(ok.var())), facts


def _constant(value: np.ndarray) -> object:
    """A fed constant as the report records it: its values, or a large one's shape, type and SHA-256."""
    if value.size <= FEED_VALUES:
        return value.tolist()
    return {"shape": list(value.shape), "dtype": value.dtype.name, "sha256": hashlib.sha256(np.ascontiguousarray(value)).hexdigest()}


def _input_parts(x: np.ndarray | Inputs) -> list:
    """What the numbers depend on in the inputs (one array: itself, as before several inputs)."""
    if not isinstance(x, Inputs):
        return [x]
    return [sorted(x.axes.items()), *(p for k in sorted(x.arrays) for p in (k, x.arrays[k])),
            *(p for k in sorted(x.fixed) for p in (k, x.fixed[k]))]  # fmt: skip


def walk_points(
    engine: Engine,
    chosen: list[Point],
    data: Dataset,
    st: SweepSettings,
    req: ScanRequest,
    base: Levels,
    tick,
    keep: Callable[[Point, dict], None],
    scales: dict[int, float] | None = None,
    cluster: Cluster | None = None,
) -> None:
    """Walk ``chosen``, handing each finished curve to ``keep``; over the Dask ``cluster`` or
    ``req.jobs`` processes when asked. ``scales``: relative σ, point index → the clean
    activation std σ is measured in."""
    scale = (lambda p: None) if scales is None else (lambda p: scales[p.index])
    if not chosen:
        return
    if cluster is not None:
        for point, curve in cluster.walk(chosen, st, req, base, scale):
            keep(point, curve)
            tick(1)
        return
    if req.jobs <= 1 or len(chosen) == 1:
        for group in engine.tap_groups(chosen, data, st):  # one clean prefix run per batch for a group
            sub = replace(st, batch_size=engine.walk_batch(group, data, st))  # one batch size: shared clean values
            per_point = 1 if req.estimator == "sequential" else max(1, engine.sweep_work(data, sub))
            with engine.shared_taps(group, sub):
                for point in group:
                    done = [0.0]  # this point's share of the bar so far: at most 1, and exactly 1 when it ends

                    def ticks(n: float, done: list = done, k: float = per_point) -> None:
                        step = min(n / k, 1.0 - done[0])  # per_point is an estimate (stacking, padding)
                        done[0] += step
                        tick(step)

                    keep(point, _walk_one(engine, point, data, sub, req, base, ticks, scale(point)))
                    tick(1.0 - done[0])
        return
    threads = max(1, (req.threads or os.cpu_count() or 1) // req.jobs)
    ctx = multiprocessing.get_context("spawn")
    init = worker_setup(engine, data, threads, Share.split(req.memory, req.jobs))  # the workers share the budget
    pool = ProcessPoolExecutor(req.jobs, mp_context=ctx, initializer=_worker_init, initargs=init)
    try:
        with _sigint_held():  # workers start with Ctrl-C held back: no traceback from their imports
            futures = {pool.submit(_worker_walk, point, st, req, base, scale(point)): point for point in chosen}
        for future in as_completed(futures):
            keep(futures[future], future.result())
            tick(1)
    except BaseException:  # Ctrl-C or SIGTERM here: stop the workers now instead of letting them finish
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle on the workers
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _walk_one(
    engine: Engine,
    point: Point,
    data: Dataset,
    st: SweepSettings,
    req: ScanRequest,
    base: Levels,
    tick=lambda _n: None,
    scale: float | None = None,
) -> dict:
    """One walked point's curve; ``scale``: relative σ, the grid's σ values are in units of
    this std (the curve keeps them in those units and records the std)."""
    with engine.round_cache() if req.adaptive else contextlib.nullcontext() as cache:  # adaptive rounds reuse work

        def measure(sigmas: np.ndarray) -> Counts:
            absolute = sigmas if scale is None else sigmas * scale
            return engine.walk(point, data, replace(st, sigmas=absolute), tick, cache=cache)

        try:
            if req.estimator == "sequential":
                ev = engine.walker(point, data, st)
                curve = {**point.to_json(),
                         **sequential_curve(engine, ev, data, st, base, req.tolerance, [0, point.index], scale)}  # fmt: skip
                tick(1)
            else:
                curve = {**point.to_json(), **measure_curve(measure, st, base, req.adaptive, req.tolerance)}
            if scale is not None:
                curve["activation_std"] = scale
            if engine.mixes_samples(point, st.spec):
                curve["mixes_samples"] = True
            return curve
        except (DataError, PluginError):  # the data or a plug-in (a metric, a noise model): every point would fail alike
            raise
        except Exception as err:  # one point whose graph cannot be evaluated must not end the scan
            return failed_curve(point, err)
        finally:
            engine.release(point)


def failed_curve(point: Point, err: Exception) -> dict:
    """The report entry of a point that could not be evaluated: status ``failed``, no μ, and a
    one-line reason."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = text if isinstance(err, WnError) else f"{type(err).__name__}: {text}".rstrip(": ")
    none = dict.fromkeys(("mu", "mu_err", "a_max", "a_min"))
    return {**point.to_json(), "sigmas": [], "accuracy": [], "nonfinite": [], **none, "status": FAILED,
            "reason": reason, "fit": {"note": reason}}  # fmt: skip


_WORKER: dict = {}


def _worker_init(*setup) -> None:
    """Each worker process loads the model itself (sessions do not cross processes). It ignores
    Ctrl-C (the scan process terminates it) and ends itself when the scan process dies (kill -9
    leaves no worker behind). ``setup``: :func:`worker_setup`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scan process stops its workers on Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held back since the start is dropped
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        _WORKER.update(worker_state(*setup))
    except WnError as err:  # e.g. too small a share of the budget: the scan process reports it, as one line
        _WORKER["error"] = err


def worker_setup(engine: Engine, data: Dataset, threads: int, memory: int | Share | None) -> tuple:
    """What a worker (a --jobs process or a Dask worker) is sent to build its state from
    (:func:`worker_state`): the model's file and output, the data, providers, threads, the clean
    outputs the scan process computed, the worker's memory budget (a :class:`Share` of the scan's
    on this machine)."""
    return (engine.loaded.path, engine.loaded.output_name, data.x, data.y, engine.providers, threads,
            engine.known_clean(data), memory)  # fmt: skip


def worker_state(
    path: str,
    output: str,
    x: np.ndarray,
    y: np.ndarray,
    providers: list[str],
    threads: int,
    reference: np.ndarray,
    memory: int | Share | None,
) -> dict:
    """What a worker (a --jobs process or a Dask worker) walks with: its own engine (sessions do
    not cross processes) under the memory budget, the data and the clean outputs."""
    data = Dataset(x, y, "worker")
    engine = Engine(load_model(path, output), providers, threads, memory)
    engine.remember_clean(data, reference)  # computed once by the scan process
    return {"engine": engine, "data": data}


@contextlib.contextmanager
def _sigint_held():
    """While the workers are spawned, SIGINT is blocked in this thread (the workers inherit the mask,
    so a Ctrl-C stays pending until their initializer drops it) and, if another thread takes it,
    only noted; KeyboardInterrupt is raised once every worker has started."""
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    noted = []
    previous = signal.signal(signal.SIGINT, lambda *_: noted.append(True))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    except Exception:
        if not noted:
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_walk(
    point: Point, st: SweepSettings, req: ScanRequest, base: Levels, scale: float | None, state: dict | None = None
) -> dict:
    """One point's curve in a worker (``state``: from :func:`worker_state`; default: this --jobs process's)."""
    own = state or _WORKER
    if "error" in own:  # the worker could not be set up (_worker_init)
        raise own["error"]
    return _walk_one(own["engine"], point, own["data"], st, req, base, scale=scale)
