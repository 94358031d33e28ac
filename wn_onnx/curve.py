"""One curve: a point's (or the global) accuracy against noise strength, measured and fitted.

What a scan does for every point, wherever it runs (wn_onnx.executors: in the scan process,
in a process pool, on a Dask worker): the clean level the curve falls from (:func:`clean_pass`),
the grid or adaptive measurement (:func:`measure_curve`), the sequential estimator
(:func:`sequential_curve`), the fit's JSON and the stored curves a resumed scan takes.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from wn_onnx.engine import Counts, Engine, SweepSettings, providers_for
from wn_onnx.engine.draws import ORDER_STREAM
from wn_onnx.engine.sweep import Evaluation
from wn_onnx.errors import DataError, ModelError, PluginError, WnError
from wn_onnx.graph_passes import Point
from wn_onnx.io.data import Dataset, check_shape
from wn_onnx.io.model import LoadedModel
from wn_onnx.metrics import get_metric, score
from wn_onnx.noise import NoiseModel, NoiseSpec
from wn_onnx.noise.quant import bits_of
from wn_onnx.results.fit import curve_json as fit_curve_json
from wn_onnx.results.schema import FAILED
from wn_onnx.results.sequential import estimate
from wn_onnx.results.store import CurveStore
from wn_onnx.scan_config import ScanConfig


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
    ``scale``: relative σ of a walked point (σ in units of this std, as the grid's curve keeps it).
    Weight noise (``base.repeat_shift``) is one draw per repeat: its trials cycle over the repeats."""
    swept = st.sigmas[np.any(np.stack(st.spec.components(st.sigmas)) > 0, axis=0)]

    def outcomes(sigma: float, rows: np.ndarray, repeat: int) -> tuple[np.ndarray, np.ndarray]:
        return engine.outcomes(ev, data, st, sigma * (1.0 if scale is None else scale), rows, repeat)

    return estimate(outcomes, len(data), st.repeats, float(swept[swept > 0].min()), float(swept.max()), base.clean,
                    base.chance, len(swept) * len(data) * st.repeats, tolerance, [st.seed, ORDER_STREAM, *key],
                    base.clean_variance, chips=base.repeat_shift)  # fmt: skip

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


def walk_one(
    engine: Engine,
    point: Point,
    data: Dataset,
    st: SweepSettings,
    config: ScanConfig,
    base: Levels,
    tick=lambda _n: None,
    scale: float | None = None,
) -> dict:
    """One walked point's curve; ``scale``: relative σ, the grid's σ values are in units of
    this std (the curve keeps them in those units and records the std)."""
    with engine.round_cache() if config.adaptive else contextlib.nullcontext() as cache:  # adaptive rounds reuse work

        def measure(sigmas: np.ndarray) -> Counts:
            absolute = sigmas if scale is None else sigmas * scale
            return engine.walk(point, data, replace(st, sigmas=absolute), tick, cache=cache)

        try:
            if config.estimator == "sequential":
                ev = engine.walker(point, data, st)
                curve = {**point.to_json(),
                         **sequential_curve(engine, ev, data, st, base, config.tolerance, [0, point.index], scale)}  # fmt: skip
                tick(1)
            else:
                curve = {**point.to_json(), **measure_curve(measure, st, base, config.adaptive, config.tolerance)}
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

def stored_curve(store: CurveStore | None, key: str, base: Levels, samples: int, config: ScanConfig) -> dict | None:
    """The curve stored under ``key`` when its fit is the fit of its own accuracies (a row edited to
    another μ or status is computed again, never reported); the sequential estimator's curves are
    not grid fits and are taken as stored."""
    curve = None if store is None else store.get(key)
    if curve is None or config.estimator != "grid":
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
    clean = engine.clean_outputs(data, batch_size)[: len(data)]  # the engine keeps them for every σ = 0 (samples first)
    where = f"{loaded.path}: output {loaded.output_name!r}"
    axis = engine.output_axis(data.x)
    if axis != 0 and not metric.plugin:
        raise ModelError(f"{engine.output_run()}: its samples are on axis {axis}, and {metric_name} scores outputs with "
                         "the samples on axis 0; a plug-in metric (--metric file.py:function) gets the output as the "
                         "model returns it")  # fmt: skip
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
    ok, bad = score(metric, clean, clean, labels, len(clean), axis)
    if bad.all():
        raise ModelError(f"{where}: NaN/Inf for every one of the {len(bad)} samples without noise: nothing to measure")
    chance, clean_score = metric.chance(clean, labels, axis), float(ok.mean())
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


def prepared(loaded: LoadedModel, data: Dataset, config: ScanConfig) -> tuple[Engine, Dataset, Levels]:
    """The model's engine (the configuration's device, threads and memory) and the clean pass over
    labelled ``data`` as the configuration's metric scores it: what an analysis or a plan
    evaluation measures from (the engine holds the data: its budget is measured after it)."""
    engine = Engine(loaded, providers_for(config.device), config.threads, config.memory)
    data, base, _facts = clean_pass(engine, data, config.metric, config.batch_size, False, config.metric_timeout)
    return engine, data, base
