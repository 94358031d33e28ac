"""The Python face of wn-onnx: what a notebook or a script needs, in a handful of calls.

Each call is one phase, as the command line runs them (README "Python API"):
``load_model`` → ``find_points`` → ``load_data`` → ``scan`` → :class:`Report` → ``plan`` / ``check``;
``fit_curve`` fits a curve measured elsewhere. Errors are :class:`wn_onnx.errors.WnError`
subclasses, never a traceback from deep inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from wn_onnx.errors import ConfigError, DataError
from wn_onnx.graph_passes import Point, select_points
from wn_onnx.graph_passes import find_points as _all_points
from wn_onnx.io.data import Dataset, Inputs, check_shape, data_inputs, load_npz, load_streamed, make_dataset
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import LoadedModel, load_model
from wn_onnx.noise import NoiseModel, default_repeats, make_noise
from wn_onnx.results.fit import curve_json
from wn_onnx.results.report import Curve, Report

ModelLike = str | os.PathLike | LoadedModel
DataLike = Dataset | tuple | str | os.PathLike | None


def _model(model: ModelLike | None) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(DEFAULT_MODEL if model is None else model)


def find_points(model: ModelLike, at: str | None = None, granularity: str = "layer") -> list[Point]:
    """The noise points of ``model`` (all, or those ``at`` selects: ``"0,3,5-8"``, ``"op:Conv"``,
    ``"re:PATTERN"``): one per layer and complete function, or with ``granularity="op"`` one per op."""
    return select_points(_all_points(_model(model).model, granularity), at)


def load_data(
    model: ModelLike,
    data: DataLike = None,
    *,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    limit_mode: str = "stratified",
    labels: bool = True,
    feeds: dict[str, np.ndarray | float] | None = None,
) -> Dataset:
    """Evaluation data for ``model``, checked against its inputs: a :class:`Dataset`, an ``(x, y)``
    pair (``x`` an array, or a dict of arrays by input name for a model with several inputs), an
    ``.npz`` file with ``x`` (or one array per input) and ``y``, inputs streamed from files (a
    ``.npy``, a pair of ``.npy`` paths (inputs, labels), a folder of ``x.npy`` or one ``<input>.npy``
    per input and ``y.npy``, or of ``.npz`` shards; docs/guide.md "Memory"), or a bundled dataset by name
    (``dataset="fashion-mnist"``, normalised as the model's metadata says). ``labels=False``
    accepts data without labels (label-free scans); ``feeds``: constants for inputs that are not
    data (a state, a sample rate; docs/guide.md "Inputs")."""
    loaded = _model(model)
    fed = {k: np.asarray(v) for k, v in (feeds or {}).items()}
    if dataset is not None:
        from wn_onnx.io.datasets import model_ready

        found = model_ready(loaded.model, dataset, split, None if data_dir is None else Path(data_dir), limit, limit_mode)
    elif isinstance(data, Dataset):
        found = data
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise DataError("data as a tuple must be (x, y); pass (x, None) for label-free data")
        x, y = data
        if isinstance(x, (str, os.PathLike)):  # ("x.npy", "y.npy"): streamed inputs, their labels
            found = load_streamed(x, y, limit, labels, limit_mode, data_inputs(loaded, fed) or (loaded.input_name,), tuple(fed))
        else:
            x = Inputs({k: np.asarray(v) for k, v in x.items()}) if isinstance(x, dict) else np.asarray(x)
            found = make_dataset(x, None if y is None else np.asarray(y), "arrays", limit, limit_mode)
    elif data is None:
        raise DataError("no evaluation data: give arrays (x, y), an .npz file with x and y, or a dataset name")
    elif Path(data).suffix == ".npy" or Path(data).is_dir():  # streamed (docs/guide.md "Memory")
        found = load_streamed(data, None, limit, labels, limit_mode, data_inputs(loaded, fed) or (loaded.input_name,), tuple(fed))
    else:
        found = load_npz(data, limit, labels, limit_mode, data_inputs(loaded, fed), tuple(fed))
    return check_shape(found, loaded, fed)


def scan(
    model: ModelLike | None = None,
    data: DataLike = None,
    *,
    noise: str | NoiseModel = "add",
    on: str = "activations",
    sigmas: str | Sequence[float] | None = None,
    repeats: int | None = None,
    seed: int = 0,
    mode: str = "both",
    at: str | None = None,
    label_free: bool = False,
    batch_size: int = 1024,
    threads: int = 0,
    device: str = "cpu",
    adaptive: bool = False,
    tolerance: float = 0.05,
    redraw: bool = False,
    global_after_bn: bool = True,
    granularity: str = "layer",
    sigma_scale: str = "absolute",
    metric: str = "top1",
    metric_timeout: float | None = None,
    feeds: dict[str, np.ndarray | float] | None = None,
    estimator: str = "grid",
    memory: int | str | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> Report:
    """Sweep σ at every selected point (walking) and at all of them at once (global) and fit μ.

    ``model`` and ``data`` omitted: the embedded digits MLP on its held-out split. ``noise``:
    a model's name (``"add"``, ``"mul"``, ``"quant"``, ``"bitflip"``, ``"module:Name"``) or a
    :class:`NoiseModel` (:func:`make_noise`: mixed noise, options); ``on``: ``"activations"`` or
    ``"weights"``. ``sigmas``: a grid text (``"log:1e-2:1e2:21"``) or values in the model's levels
    (σ, bits, bit error rate); default the model's grid. ``repeats``: default 5 on activations, 10
    on weights (where each repeat is one draw for every sample: docs/method.md, "Weight noise").
    ``granularity``: ``"layer"`` (a GELU or LayerNorm is one point) or ``"op"``; ``sigma_scale="std"``:
    σ in units of each point's clean activation std. ``metric``: ``"top1"``, ``"binary"``,
    ``"per-position"`` or a plug-in ``"module:function"`` (docs/guide.md "Metrics"), which may take
    ``metric_timeout`` seconds per batch (default 60); ``feeds``: constants
    for inputs that are not data (docs/guide.md "Inputs"). ``progress(description, total)`` may return a
    ``tick(n)`` callback. ``estimator="sequential"``: μ from per-sample trials at the σ that tell
    most about it, until ``mu_err ≤ tolerance·μ`` (docs/method.md, "Sequential estimator").
    ``memory``: the peak resident memory (bytes, or ``"2G"``; default: docs/guide.md "Memory"), shared
    with ``jobs`` processes or a local cluster's workers (a remote cluster's workers each get it all).
    ``workers`` / ``scheduler``: walk the points on a local Dask cluster of that many processes,
    or on the cluster of that scheduler address.
    """
    from wn_onnx.engine import SweepSettings
    from wn_onnx.engine.memory import parse_size
    from wn_onnx.metrics import get_metric
    from wn_onnx.scanner import ScanRequest, run_scan

    if model is None:
        if data is not None:
            raise ConfigError("data without a model: the embedded default model only runs on its own digits")
        data = DEFAULT_DATA
    loaded = _model(model)
    spec = noise if isinstance(noise, NoiseModel) else make_noise(noise)
    if sigmas is None or isinstance(sigmas, str):
        grid = spec.levels(sigmas)
    else:
        values = np.asarray(sigmas, float)
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
            raise ConfigError("sigmas must be a non-empty list of finite values")
        grid = spec.levels(",".join(repr(float(v)) for v in values))
    dataset = load_data(loaded, data, labels=not label_free, feeds=feeds)
    repeats = default_repeats(on) if repeats is None else repeats
    settings = SweepSettings(grid, spec, repeats, seed, batch_size, redraw, metric=get_metric(metric, metric_timeout).name,
                             metric_timeout=metric_timeout)
    request = ScanRequest(mode=mode, at=at, label_free=label_free, device=device, threads=threads, on=on,
                          global_after_bn=global_after_bn, adaptive=adaptive, tolerance=tolerance,
                          granularity=granularity, sigma_scale=sigma_scale, estimator=estimator,
                          memory=parse_size(memory) if isinstance(memory, str) else memory, workers=workers,
                          scheduler=scheduler)  # fmt: skip
    return Report.from_json(run_scan(loaded, dataset, settings, request, progress))


def fit_curve(
    sigmas: Sequence[float], accuracy: Sequence[Sequence[float]] | Sequence[float], *, chance: float, n_samples: int,
    clean: float | None = None, shared_draws: bool = True,
) -> Curve:  # fmt: skip
    """Fit μ to a curve measured elsewhere: ``accuracy`` per σ (one value, or one row of repeats),
    measured on ``n_samples`` samples, falling to ``chance``; ``clean`` is the σ = 0 accuracy if known;
    ``shared_draws`` False when each σ drew its own noise (a scan scales one draw per repeat).
    The result has the same statuses and errors as a scan's curves (docs/method.md)."""
    s = np.asarray(sigmas, float)
    acc = np.asarray(accuracy, float)
    acc = acc[:, None] if acc.ndim == 1 else acc
    if acc.ndim != 2 or len(acc) != len(s) or len(s) == 0:
        raise DataError(f"accuracy needs one row per σ ({len(s)}), got shape {acc.shape}")
    if not (np.isfinite(acc).all() and ((acc >= 0) & (acc <= 1)).all()):
        raise DataError("accuracy values must be fractions in [0, 1]")
    if n_samples < 1:
        raise DataError("n_samples must be >= 1")
    return Curve.from_json(curve_json(s, acc, np.zeros(acc.shape, int), chance, n_samples, clean, shared_draws))


def _report(report: Report | dict | str | os.PathLike) -> dict:
    if isinstance(report, Report):
        return report.to_json()
    if isinstance(report, dict):
        return Report.from_json(report).to_json()
    return Report.load(report).to_json()


def plan(report: Report | dict | str | os.PathLike, budget: int | str | None = None, strategy: str = "inverse-mu") -> dict:
    """Spread ``budget`` executions (a whole number ≥ the point count; default 2 per point) over the
    walked points: ``"uniform"`` or ``"inverse-mu"`` (paper Table 3). The greedy search measures
    accuracy and runs from the command line (``wn-onnx plan --strategy greedy``)."""
    from wn_onnx.planner import PlanInput, averaged_by_repeats, inverse_mu, parse_budget, plan_json, plannable, uniform

    if strategy not in ("uniform", "inverse-mu"):
        raise ConfigError(f"unknown strategy {strategy!r} here; choose uniform or inverse-mu")
    data = averaged_by_repeats(plannable(_report(report)))
    inp = PlanInput.from_report(data)
    total = parse_budget(budget, len(inp.indices))
    executions = uniform(len(inp.indices), total) if strategy == "uniform" else inverse_mu(inp.mu, total, inp.robust)
    return plan_json(strategy, total, executions, inp, data)


def check(
    report: Report | dict | str | os.PathLike,
    *,
    min_mu: float | None = None,
    global_min_mu: float | None = None,
    baseline: Report | dict | str | os.PathLike | None = None,
    max_drop: float | None = None,
    point_floors: Sequence[tuple[str, float]] = (),
) -> list:
    """CI verdicts for ``report``: every point's μ ≥ ``min_mu`` (``point_floors``: (pattern, min μ)
    per point, patterns as in check configs), the global μ ≥ ``global_min_mu``, and no μ more than
    ``max_drop`` (a fraction) below ``baseline``'s. Returns one :class:`wn_onnx.gate.Verdict` per rule;
    ``all(v.passed for v in verdicts)`` is the gate."""
    from wn_onnx.gate import Policy, evaluate_policy

    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"the allowed μ drop must lie in [0, 1), got {max_drop}")
    policy = Policy(min_mu, global_min_mu, max_drop, list(point_floors))
    return evaluate_policy(_report(report), policy, None if baseline is None else _report(baseline))
