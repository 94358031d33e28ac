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
from typing import TYPE_CHECKING

import numpy as np

from wn_onnx.errors import ConfigError, DataError, ScanInterrupted
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.safeio import guard_outputs, write_json
from wn_onnx.noise import Converters, NoiseModel, NoiseSpec, make_noise
from wn_onnx.results.report import Curve, Report
from wn_onnx.scan_config import ScanConfig

if TYPE_CHECKING:  # loaded where used: onnx, onnx_ir and scipy stay out of the command line's start-up
    from wn_onnx.gate import Verdict
    from wn_onnx.graph_passes import Point
    from wn_onnx.io.data import Dataset
    from wn_onnx.io.model import LoadedModel
    from wn_onnx.planner import Plan

    ModelLike = str | os.PathLike | LoadedModel
    DataLike = Dataset | tuple | str | os.PathLike | None

__all__ = [
    "DEFAULT_DATA", "DEFAULT_MODEL", "Converters", "Curve", "Dataset", "LoadedModel", "NoiseModel", "Plan", "Point",
    "Report", "ScanConfig", "ScanInterrupted", "Verdict", "apply_plan", "binarize", "check", "check_config",
    "digital", "find_points", "fit_curve", "load_data", "load_model", "make_noise", "mixed",
    "not_points", "plan", "read_report", "scan", "scan_config", "train", "weight_magnitudes",
]  # fmt: skip

# Names the commands need that load heavier modules: imported on first use (module __getattr__),
# so the command line starts without them.
_LAZY = {
    "Dataset": "wn_onnx.io.data", "LoadedModel": "wn_onnx.io.model",
    "Point": "wn_onnx.graph_passes", "Verdict": "wn_onnx.gate", "markdown": "wn_onnx.gate", "junit": "wn_onnx.gate", "Plan": "wn_onnx.planner",
    "greedy_evaluations": "wn_onnx.planner", "STRATEGIES": "wn_onnx.planner", "parse_budget": "wn_onnx.planner", "digital_strength": "wn_onnx.planner", "parse_size": "wn_onnx.engine.memory",
    "fetch_dataset": "wn_onnx.io.datasets.fetch", "load_sweep": "wn_onnx.training.sweep",
    "run_sweep": "wn_onnx.training.sweep", "RunStore": "wn_onnx.training.sweep", "status_counts": "wn_onnx.training.sweep",
    "sweep_reports": "wn_onnx.training.sweep",
}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), "fetch" if name == "fetch_dataset" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wn_onnx.api' has no attribute {name!r}")


def load_model(path: str | os.PathLike, output: str | None = None) -> LoadedModel:
    """Read, check and shape-infer the ONNX model at ``path``; ``output``: the graph output to score
    (default: the first float output)."""
    from wn_onnx.io.model import load_model as read

    return read(path, output)


def _model(model: ModelLike | None) -> LoadedModel:
    from wn_onnx.io.model import LoadedModel

    return model if isinstance(model, LoadedModel) else load_model(DEFAULT_MODEL if model is None else model)


def _is_loaded(model: object) -> bool:
    from wn_onnx.io.model import LoadedModel

    return isinstance(model, LoadedModel)


def find_points(model: ModelLike, at: str | None = None, granularity: str = "layer", on: str = "activations") -> list[Point]:
    """The noise points of ``model`` (all, or those ``at`` selects: ``"0,3,5-8"``, ``"op:Conv"``,
    ``"re:PATTERN"``): one per layer and complete function, or with ``granularity="op"`` one per op;
    ``on="weights"``: its weight layers (Conv, ConvTranspose, Gemm, MatMul with a constant float weight)."""
    from wn_onnx.graph_passes import select_points
    from wn_onnx.graph_passes.fold_weights import weights_folded
    from wn_onnx.graph_passes.weights import points_on

    loaded = weights_folded(_model(model)) if on == "weights" else _model(model)
    return select_points(points_on(loaded.model, on, granularity, loaded.path), at)


def not_points(model: ModelLike) -> list[dict]:
    """The float values of ``model`` that hold no sample's values (computed from weights alone, or
    of another batch size): listed by ``points --all``, never noised."""
    from wn_onnx.graph_passes.points import batch_values

    return batch_values(_model(model).model)


def load_data(
    model: ModelLike,
    data: DataLike = None,
    *,
    labels: str | os.PathLike | None = None,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    limit_mode: str = "stratified",
    label_free: bool = False,
    feeds: dict[str, np.ndarray | float] | Sequence[str] | None = None,
) -> Dataset:
    """Evaluation data for ``model``, checked against its inputs: a :class:`Dataset`, an ``(x, y)``
    pair (``x`` an array, or a dict of arrays by input name for a model with several inputs), an
    ``.npz`` file with ``x`` (or one array per input) and ``y``, inputs streamed from files (a
    ``.npy`` with ``labels`` a ``.npy`` of integer labels, a folder of ``x.npy`` or one
    ``<input>.npy`` per input and ``y.npy``, or of ``.npz`` shards; docs/guide.md "Memory"), or a
    bundled dataset by name (``dataset="fashion-mnist"``, normalised as the model's metadata says).
    ``label_free`` accepts data without labels; ``feeds``: constants for inputs that are not data
    (a state, a sample rate), by name or as ``NAME=NUMBER`` / ``NAME=FILE.npy`` texts."""
    from wn_onnx.io.data import (
        Dataset,
        Inputs,
        check_shape,
        data_inputs,
        load_npz,
        load_streamed,
        make_dataset,
        parse_feeds,
    )
    from wn_onnx.io.safeio import regular_file

    if isinstance(labels, bool):
        raise ConfigError("labels is a labels file (.npy, with inputs streamed from a .npy); for data without labels "
                          "pass label_free=True")  # fmt: skip
    loaded = _model(model)
    fed = parse_feeds(list(feeds)) if isinstance(feeds, list | tuple) else {k: np.asarray(v) for k, v in (feeds or {}).items()}
    if isinstance(data, tuple):
        if len(data) != 2:
            raise DataError("data as a tuple must be (x, y); pass (x, None) for label-free data")
        if isinstance(data[0], str | os.PathLike):  # ("x.npy", "y.npy"): streamed inputs, their labels
            data, labels = data
    names = data_inputs(loaded, fed)
    if dataset is not None:
        from wn_onnx.io.datasets import model_ready

        found = model_ready(loaded.model, dataset, split, None if data_dir is None else Path(data_dir), limit, limit_mode)
    elif isinstance(data, Dataset):
        found = data
    elif isinstance(data, tuple):
        x, y = data
        x = Inputs({k: np.asarray(v) for k, v in x.items()}) if isinstance(x, dict) else np.asarray(x)
        found = make_dataset(x, None if y is None else np.asarray(y), "arrays", limit, limit_mode)
    elif data is None:
        raise DataError("no evaluation data: give --data FILE.npz with arrays x (model inputs) and y (labels), "
                        "or --dataset NAME")  # fmt: skip
    elif Path(data).suffix == ".npy" or Path(data).is_dir():  # streamed (docs/guide.md "Memory")
        found = load_streamed(data, labels, limit, not label_free, limit_mode, names or (loaded.input_name,), tuple(fed))
    else:
        regular_file(Path(data), "data file")  # /dev/zero is named as what it is, before the options are matched
        if labels is not None:
            raise DataError("a labels file goes with inputs streamed from a .npy (--data X.npy); an .npz carries its own y")
        found = load_npz(data, limit, not label_free, limit_mode, names, tuple(fed))
    return check_shape(found, loaded, fed)


def scan_config(config: ScanConfig | None = None, **overrides: object) -> ScanConfig:
    """``config`` (default: the defaults) with ``overrides`` (``sigmas`` is ``levels``), checked."""
    if "sigmas" in overrides:
        if "levels" in overrides:
            raise ConfigError("levels and sigmas name the same grid: give one")
        overrides["levels"] = overrides.pop("sigmas")
    return (config or ScanConfig()).replace(**overrides) if overrides else (config or ScanConfig())


def scan(
    model: ModelLike | None = None,
    data: DataLike = None,
    config: ScanConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[str, int], Callable[[float], None]] | None = None,
    inputs: Sequence[str | os.PathLike | None] = (),
    **overrides: object,
) -> Report:
    """Sweep the noise strength at every selected point (walking) and at all of them at once
    (global) and fit μ: :class:`ScanConfig` says how (``scan(noise="mul", repeats=3)`` builds one;
    ``config=`` and keyword overrides combine). ``model`` and ``data`` omitted: the embedded digits
    MLP on its held-out split; ``data`` as :func:`load_data` takes it (read with the
    configuration's ``limit``, ``feeds``, ``label_free``). ``out``: write the report there, and
    each finished curve to ``out.sqlite`` (``resume=True`` takes the curves an earlier run with the
    same settings finished; Ctrl-C writes the partial report). ``progress(description, total)``
    may return a ``tick(n)`` callback; ``inputs``: more files ``out`` must not overwrite (data
    files read before the call; the model's own are known)."""
    from wn_onnx.results.store import CurveStore
    from wn_onnx.scanner import run_scan

    config = scan_config(config, **overrides)
    if model is None:
        if data is not None:
            raise ConfigError("data without a model: the embedded default model only runs on its own digits")
        data = DEFAULT_DATA
    loaded = _model(model)
    dataset = _dataset(loaded, data, config)
    if resume and out is None:
        raise ConfigError("--resume needs --out: finished curves are kept in OUT.sqlite")
    path = None if out is None else Path(out)
    if path is not None:
        sources = [loaded.path, *loaded.external, *(data if isinstance(data, tuple) else [data]), *inputs]
        guard_outputs([path, path.with_name(path.name + ".sqlite")], [s for s in sources if isinstance(s, str | os.PathLike)])
    store = None if path is None else CurveStore(path.with_name(path.name + ".sqlite"))
    try:
        report = run_scan(loaded, dataset, config, progress, store, resume)
    except ScanInterrupted as stop:
        if path is not None:
            write_json(path, stop.report)
        raise
    finally:
        if store is not None:
            store.close()
    if path is not None:
        write_json(path, report)
    return Report.from_json(report)


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
    from wn_onnx.results.fit import curve_json

    return Curve.from_json(curve_json(s, acc, np.zeros(acc.shape, int), chance, n_samples, clean, shared_draws))


def read_report(report: Report | dict | str | os.PathLike, *, walked: bool = False) -> dict:
    """A report as its JSON dict, checked (docs/report-schema.md); ``walked``: it must hold walked
    points with usable μ values (what planning and a baseline comparison need)."""
    from wn_onnx.planner import plannable

    if isinstance(report, Report):
        data = report.to_json()
    elif isinstance(report, dict):
        data = Report.from_json(report).to_json()
    else:
        data = Report.load(report).to_json()
    return plannable(data, str(report) if isinstance(report, str | os.PathLike) else "report") if walked else data


def check_config(path: str | os.PathLike | None = None) -> dict:
    """A CI gate's settings: ``wn-onnx.toml`` (top level) or ``pyproject.toml`` (``[tool.wn-onnx]``),
    by default the one in the working folder ({} when there is none); unknown keys are named."""
    from wn_onnx.gate import load_config

    return load_config(None if path is None else Path(path))


def plan(
    report: Report | dict | str | os.PathLike,
    budget: int | str | None = None,
    strategy: str = "inverse-mu",
    *,
    evaluate: Sequence[str] | str = (),
    model: ModelLike | None = None,
    data: DataLike = None,
    config: ScanConfig | None = None,
    noise: NoiseModel | None = None,
    sigma: float | str = "global-mu",
    repeats: int = 20,
    seed: int = 0,
    granularity: str | None = None,
    tick: Callable[[], None] = lambda: None,
    **overrides: object,
) -> Plan:
    """Spread ``budget`` executions (a whole number ≥ the point count; default 2 per point) over the
    walked points of ``report``: ``"uniform"``, ``"inverse-mu"`` (paper Table 3) or ``"greedy"``
    (measured). ``evaluate``: the strategies to measure under global noise — ``noise`` (default the
    report's) at ``sigma`` (default the report's global μ), ``repeats`` draws of ``seed``, the same
    for every plan — on ``model`` and ``data`` read as ``config`` (and ``overrides``) says; the
    metric is the report's unless given. ``tick()`` is called after each measured plan."""
    from wn_onnx.planner import averaged_by_repeats, make_plan, match_model, plan_evaluation

    data_report = averaged_by_repeats(read_report(report, walked=True), str(report) if isinstance(report, str | os.PathLike) else "report")
    evaluation = None
    if evaluate or strategy == "greedy":
        if model is None or data is None:
            raise ConfigError("measuring plans (evaluate, greedy) needs the model and data")
        if config is None and "metric" not in overrides:
            overrides["metric"] = data_report.get("metric") or "top1"
        config = scan_config(config, **overrides)
        loaded, points = match_model(data_report, model.path if _is_loaded(model) else model, granularity)
        dataset = _dataset(loaded, data, config)
        evaluation = plan_evaluation(data_report, loaded, points, dataset, noise, sigma, repeats, seed, config, tick)
    return make_plan(data_report, budget, strategy, [evaluate] if isinstance(evaluate, str) else list(evaluate), evaluation)


def digital(
    report: Report | dict | str | os.PathLike,
    k: int,
    *,
    evaluate: bool = False,
    model: ModelLike | None = None,
    data: DataLike = None,
    config: ScanConfig | None = None,
    at_time: str | None = None,
    repeats: int = 20,
    seed: int = 0,
    **overrides: object,
) -> dict:
    """The weight layers of an analog model to keep digital (noise-free): the ``k`` least robust of a
    weight-noise ``report`` and, with ``evaluate``, the accuracy at ``at_time`` (default the scan's
    longest) of every split K ≤ k against keeping the first K layers, on fresh chips."""
    from wn_onnx.planner import check_digital, digital_evaluation, digital_order, match_model

    data_report = read_report(report, walked=True)
    order = digital_order(data_report)
    check_digital(k, len(order))
    result: dict = {"report": str(report) if isinstance(report, str | os.PathLike) else None, "digital": k,
                    "layers": [data_report["points"][i]["index"] for i in order[:k]]}  # fmt: skip
    if evaluate:
        if model is None or data is None:
            raise ConfigError("evaluating a digital split needs the model and data")
        config = scan_config(config, **overrides)
        loaded, points = match_model(data_report, model.path if _is_loaded(model) else model)
        dataset = _dataset(loaded, data, config)
        result["evaluation"] = digital_evaluation(data_report, k, at_time, loaded, points, dataset, repeats, seed, config)
    return result


def apply_plan(model: str | os.PathLike, plan: Plan | dict | str | os.PathLike, out: str | os.PathLike,
               noise: NoiseModel | None = None) -> list[str]:  # fmt: skip
    """Write ``model`` with the noise nodes of ``plan`` (point i executed n_i times and averaged, σ as
    graph inputs) to ``out``, for deployment studies; returns the written model's input names."""
    import json

    import onnx_ir as ir

    from wn_onnx.io.safeio import read_text
    from wn_onnx.planner import deployable

    where = str(plan) if isinstance(plan, str | os.PathLike) else "plan"
    guard_outputs([Path(out)], [model, *([plan] if isinstance(plan, str | os.PathLike) else [])])
    if isinstance(plan, str | os.PathLike):
        try:
            plan = json.loads(read_text(Path(plan), "plan"))
        except (json.JSONDecodeError, RecursionError) as err:
            raise DataError(f"{where}: not a wn-onnx plan ({type(err).__name__}: {str(err)[:200]})") from None
    written = deployable(model, plan.to_json() if hasattr(plan, "to_json") else plan, noise, where)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        ir.save(written, out)
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None
    return [v.name for v in written.graph.inputs]


def binarize(model: ModelLike, data: DataLike = None, config: ScanConfig | None = None, *, at: int, sigma: float = 1e4,
             quantize_at: int | None = None, follow: int = 3, **overrides: object) -> dict:  # fmt: skip
    """Self-binarisation (paper Fig. 4): activations after point ``at`` under strong noise
    (``config.noise``: add or mul, default mul here) of strength ``sigma``, histograms at the
    ``follow`` points after it, and the accuracy with point ``quantize_at`` (default the next)
    replaced by its two or three levels."""
    from wn_onnx.analysis import binarize as measure
    from wn_onnx.curve import prepared

    if config is None and "noise" not in overrides:
        overrides["noise"] = "mul"
    config = scan_config(config, **overrides)
    if not isinstance(config.spec, NoiseSpec) or config.spec.kind == "mixed":
        raise ConfigError("self-binarisation takes additive or multiplicative noise (add or mul)")
    loaded = _model(model)
    engine, dataset, _base = prepared(loaded, _dataset(loaded, data, config), config)
    return measure(engine, dataset, at, config.spec, sigma, config.seed, follow, quantize_at, config.granularity,
                   config.metric, config.batch_size, config.metric_timeout)  # fmt: skip


def mixed(model: ModelLike, data: DataLike = None, config: ScanConfig | None = None, *, at: int,
          orders: Sequence[str] = ("mul-first", "add-first"), sigma_mul: str = "log:1e-2:1e4:13",
          sigma_add: str = "log:1e-2:1e4:13", on: str = "activations", **overrides: object) -> list[dict]:  # fmt: skip
    """Mixed-noise maps (paper Fig. 6): accuracy over the grid (``sigma_mul`` × ``sigma_add``) at
    point ``at`` (``on``: an activation or a weight point) for each order, ``config.repeats`` draws
    per cell (default 3 here; a map has no fit, so one repeat is allowed on weights too)."""
    from wn_onnx.analysis import mixed_grid
    from wn_onnx.curve import prepared
    from wn_onnx.graph_passes.fold_weights import weights_folded
    from wn_onnx.noise import parse_grid

    if on not in ("activations", "weights"):
        raise ConfigError(f"unknown target {on!r}; choose activations, weights")
    if any(o not in ("mul-first", "add-first") for o in orders) or not orders:
        raise ConfigError(f"the order must be mul-first, add-first or both, not {', '.join(orders)!r}")
    if config is None and "repeats" not in overrides:
        overrides["repeats"] = 3
    config = scan_config(config, **overrides)
    loaded = weights_folded(_model(model)) if on == "weights" else _model(model)
    engine, dataset, _base = prepared(loaded, _dataset(loaded, data, config), config)
    return [mixed_grid(engine, dataset, at, o, parse_grid(sigma_mul), parse_grid(sigma_add), config.repeats, config.seed,
                       config.granularity, config.metric, config.batch_size, config.metric_timeout, on)
            for o in orders]  # fmt: skip


def weight_magnitudes(model: str | os.PathLike, other: str | os.PathLike | None = None) -> list[dict]:
    """Mean |w| per learnable layer of ``model`` and, given ``other``, the ratio other/model per
    layer (paper Table 2)."""
    from wn_onnx.analysis import weight_magnitudes as magnitudes
    from wn_onnx.analysis import weight_ratio

    rows = magnitudes(str(model))
    return rows if other is None else weight_ratio(rows, magnitudes(str(other)))


def train(out: str | os.PathLike = "model.onnx", *, checkpoint: str | os.PathLike | None = None, resume: bool = False,
          on_start: Callable[[str, int], None] | None = None, on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int], None] | None = None, **settings: object):  # fmt: skip
    """Train one of the paper's architectures (``arch``: mlp, lenet5, cnn-s) on ``dataset``, clean or
    with ``noise`` (a :class:`NoiseModel`) at level ``sigma`` on ``on`` (activations or weights) at
    points ``at``, and export it to ONNX ``out`` with BatchNorm kept and its metadata (normalisation,
    class names, the training noise). ``settings``: the fields of
    :class:`wn_onnx.training.run.Training`. Needs torch; returns the run's
    :class:`~wn_onnx.training.run.Trained`."""
    from wn_onnx.training.run import Training, run_training

    fields = {k: Path(v) if k in ("data_dir", "data", "val") and v is not None else v for k, v in settings.items()}
    try:
        training = Training(**fields)
    except TypeError as err:
        raise ConfigError(f"unknown training setting: {err}") from None
    return run_training(training, Path(out), None if checkpoint is None else Path(checkpoint), resume, on_start, on_epoch,
                        on_step)  # fmt: skip


def _dataset(loaded: LoadedModel, data: DataLike, config: ScanConfig) -> Dataset:
    """``data`` for ``loaded``, read as ``config`` says (a :class:`Dataset` as it is)."""
    from wn_onnx.io.data import Dataset

    if isinstance(data, Dataset):
        if config.limit is not None and len(data) > config.limit:
            raise ConfigError(f"limit {config.limit} applies where wn-onnx reads the data; these {len(data)} samples "
                              "are already read: pass limit to load_data")  # fmt: skip
        return data
    return load_data(loaded, data, limit=config.limit, limit_mode=config.limit_mode, label_free=config.label_free,
                     feeds=config.feeds)  # fmt: skip


def check(
    report: Report | dict | str | os.PathLike,
    *,
    min_mu: float | str | None = None,
    global_min_mu: float | str | None = None,
    baseline: Report | dict | str | os.PathLike | None = None,
    max_drop: float | str | None = None,
    point_floors: Sequence[tuple[str, float]] = (),
) -> list[Verdict]:
    """CI verdicts for ``report``: every point's μ ≥ ``min_mu`` (``point_floors``: (selection, min μ)
    per point, selections as ``at`` takes them), the global μ ≥ ``global_min_mu``, and no μ more
    than ``max_drop`` (a fraction or ``"20%"``; 0 with a baseline and no drop given) below
    ``baseline``'s. Floors are in the report's levels: σ, a time (``"1d"``), bits (the most a layer
    may need). Returns one :class:`Verdict` per rule; ``all(v.passed for v in verdicts)`` is the gate."""
    from wn_onnx.gate import Policy, evaluate_policy, parse_drop

    data = read_report(report)
    base = None if baseline is None else read_report(baseline, walked=True)
    drop = parse_drop(None if max_drop is None else str(max_drop))
    if drop is not None and base is None:
        raise ConfigError("an allowed μ drop needs a baseline report")
    policy = Policy(_floor(min_mu, data), _floor(global_min_mu, data), 0.0 if base is not None and drop is None else drop,
                    list(point_floors))  # fmt: skip
    return evaluate_policy(data, policy, base)


def _floor(value: float | str | None, report: dict) -> float | None:
    """A floor in the report's levels (``1y`` on a time axis), checked against the axis's range."""
    from wn_onnx.noise import noise_from_json

    if value is None:
        return None
    spec = noise_from_json(report.get("noise"))
    levels = spec.levels(str(value))
    if levels.size != 1:
        raise ConfigError(f"a floor is one level, got {value!r}")
    return float(spec.axis.level(levels[0]))
