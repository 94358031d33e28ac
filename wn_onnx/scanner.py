"""A whole scan: model + data + configuration → accuracy per (point, σ, repeat) → μ per point → report.

The orchestration only: which points, the clean pass, the report's header and its hash, the
stored curves a resumed scan takes, and Ctrl-C. Each curve is measured by wn_onnx.curve, in the
scan process or on workers (wn_onnx.executors). The report is a dict in the JSON schema of
docs/report-schema.md; wn_onnx.Report is its typed view.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from wn_onnx import __version__
from wn_onnx.curve import Levels, clean_pass, measure_curve, sequential_curve, stored_curve
from wn_onnx.engine import Counts, Engine, SweepSettings, providers_for
from wn_onnx.errors import ScanInterrupted, WnError
from wn_onnx.executors import Executor, executor_for
from wn_onnx.graph_passes import Point, select_points
from wn_onnx.graph_passes.fold_weights import weights_folded
from wn_onnx.graph_passes.weights import points_on
from wn_onnx.io.data import Dataset, Inputs
from wn_onnx.io.model import LoadedModel
from wn_onnx.metrics import get_metric
from wn_onnx.noise import NoiseSpec, noise_json, plugin_digest, plugin_source
from wn_onnx.results.schema import FAILED, NOT_RUN, SCHEMA_VERSION
from wn_onnx.results.store import CurveStore, digest
from wn_onnx.scan_config import ScanConfig

FEED_VALUES = 16  # a fed constant of at most this many values is recorded as they are
Progress = Callable[[str, int], Callable[[float], None]]


@dataclass
class _Scan:
    """What every phase of one scan reads."""

    engine: Engine
    data: Dataset
    config: ScanConfig
    st: SweepSettings
    base: Levels
    store: CurveStore | None
    resume: bool
    stored: str  # the key every stored curve of this scan starts from
    scales: dict[int, float] | None  # relative σ: each point's clean activation std

    def take(self, key: str) -> dict | None:
        """The stored curve under ``key`` when resuming (and its fit is its own), else None."""
        return stored_curve(self.store, key, self.base, len(self.data), self.config) if self.resume else None

    def keep(self, key: str, label: str, curve: dict) -> None:
        if self.store is not None and curve["status"] != FAILED:  # a resumed scan tries a failed point again
            self.store.put(key, label, curve)


def run_scan(
    loaded: LoadedModel,
    data: Dataset,
    config: ScanConfig,
    progress: Progress | None = None,
    store: CurveStore | None = None,
    resume: bool = False,
) -> dict:
    """Run the sweeps ``config`` asks for and return the report dict.

    ``progress(description, total)`` returns a ``tick(n)`` callback; None for silence. Finished
    curves go to ``store`` as they complete; with ``resume`` the ones already there are taken
    instead of recomputed. Ctrl-C raises :class:`ScanInterrupted` with the partial report.
    """
    st = config.settings()
    loaded = weights_folded(loaded) if config.on == "weights" else loaded
    engine = Engine(loaded, providers_for(config.device), config.threads, config.memory)
    chosen, skipped = _selected(loaded, config)
    data, base, facts = clean_pass(engine, data, st.metric, st.batch_size, config.label_free, st.metric_timeout)
    base = replace(base, repeat_shift=config.on == "weights")
    chosen, not_run = _computed(engine, chosen, data, st.batch_size)
    report = _header(loaded, data, config, st, engine, facts, skipped, not_run)
    scales = engine.clean_std(chosen, data, st.batch_size) if config.sigma_scale == "std" else None
    # stored curves are also keyed by what may change the arithmetic without changing the report's
    # settings: the batch size (graphs that mix samples) and the device
    stored = digest(report["config_hash"], st.batch_size, config.device)
    scan = _Scan(engine, data, config, st, base, store, resume, stored, scales)
    silent = progress or (lambda _d, _t: lambda _n: None)
    try:
        with executor_for(config, engine, data) as executor:
            if config.mode in ("walking", "both"):
                _walk(scan, executor, chosen, report, silent(f"walking {len(chosen)} points", len(chosen)))
            if config.mode in ("global", "both"):
                where = chosen if config.global_after_bn else [p for p in chosen if p.op_type != "BatchNormalization"]
                if not where:
                    raise WnError("the global sweep has no point left (all selected points are BatchNormalization outputs)")
                tick = silent(f"global noise at {len(where)} points", 1)
                report["global"] = _global(scan, executor, where)
                tick(1)
    except KeyboardInterrupt:
        report["partial"] = True
        raise ScanInterrupted(report) from None
    report["partial"] = False
    return report


def _selected(loaded: LoadedModel, config: ScanConfig) -> tuple[list[Point], list[dict]]:
    """(the selected points that can carry noise, the report entries of those that cannot)."""
    selected = select_points(points_on(loaded.model, config.on, config.granularity, loaded.path), config.at)
    if config.on == "activations" and not isinstance(config.spec, NoiseSpec):
        selected = [p if not p.path or p.unsupported else replace(p, unsupported=_in_body(config.spec.name, p.path))
                    for p in selected]  # fmt: skip
    chosen = [p for p in selected if not p.unsupported]
    if not chosen:
        raise WnError(f"no selected point can carry noise: point {selected[0].index}: {selected[0].unsupported}")
    return chosen, [{**p.to_json(), "reason": p.unsupported} for p in selected if p.unsupported]


def _in_body(name: str, path: str) -> str:
    """Why a model applied in numpy (between graph runs, engine/numpy_noise.py) skips a point inside control flow."""
    return (f"noise model {name!r} is applied between graph runs, which cannot reach a value inside {path}; "
            "Gaussian noise (add, mul, mixed) can")  # fmt: skip


def _computed(engine: Engine, chosen: list[Point], data: Dataset, batch_size: int) -> tuple[list[Point], list[dict]]:
    """(the points these data compute, the report entries of those inside If branches never taken)."""
    unrun = engine.never_run([p for p in chosen if p.path], data, batch_size)
    not_run = [{**p.to_json(), "status": NOT_RUN, "reason": f"never computed for these data (the {p.path} is not taken)"}
               for p in chosen if p.index in unrun]  # fmt: skip
    chosen = [p for p in chosen if p.index not in unrun]
    if not chosen:
        raise WnError(f"no selected point is computed for these data: every one lies in an If branch not taken "
                      f"({not_run[0]['path']}, …)")  # fmt: skip
    return chosen, not_run


def _header(loaded: LoadedModel, data: Dataset, config: ScanConfig, st: SweepSettings, engine: Engine, facts: dict,
            skipped: list[dict], not_run: list[dict]) -> dict:  # fmt: skip
    """The report before any curve: what was scanned, how, and the hash of everything the numbers depend on."""
    spec = config.spec
    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "wn_onnx_version": __version__,
        "model": loaded.path,
        "model_digest": loaded.content_digest(),
        "data": {"source": data.source, "samples": len(data), "label_free": config.label_free},
        "noise": noise_json(spec),
        **({} if config.on == "activations" else {"on": config.on}),
        **({} if isinstance(spec, NoiseSpec) else {"axis": spec.axis.to_json()}),
        **({"deterministic": True} if config.deterministic else {}),
        **({"converters": st.converters.to_json()} if st.converters is not None and st.converters.active else {}),
        "mode": config.mode,
        "seed": st.seed,
        "repeats": st.repeats,
        "common_random_numbers": not st.redraw,
        "output": loaded.output_name,
        "device": config.device,
        "providers": engine.providers,
        **facts,
        "granularity": config.granularity,
        "sigma_scale": config.sigma_scale,
        "estimator": config.estimator,
        "points": [],
        "global": None,
    }
    if skipped:
        report["skipped"] = skipped
    if not_run:
        report["not_run"] = not_run
    if isinstance(data.x, Inputs) and data.x.fed:
        report["data"]["feeds"] = {n: _constant(v) for n, v in data.x.constants().items()}
    report["config_hash"] = _config_hash(report["model_digest"], loaded, data, config, st)
    return report


def _config_hash(model_digest: str, loaded: LoadedModel, data: Dataset, config: ScanConfig, st: SweepSettings) -> str:
    """The digest of everything a curve's numbers depend on (a resumed scan takes only curves of the same)."""
    relative = ["sigma_scale=std"] if config.sigma_scale == "std" else []  # absolute: the hashes of earlier versions
    relative += [] if config.estimator == "grid" else [f"estimator={config.estimator}"]  # grid: likewise
    relative += [] if config.on == "activations" else [f"on={config.on}"]  # likewise
    relative += [] if st.converters is None or not st.converters.active else [f"converters={st.converters.to_json()}"]
    relative += [] if plugin_source(st.spec) is None else [f"plugin={plugin_digest(st.spec)}"]  # its code, not only its name
    code = get_metric(st.metric, st.metric_timeout).source  # a plug-in's file: an edited plug-in is computed again
    return digest(model_digest, loaded.output_name, *_input_parts(data.x), data.y, config.label_free, st.spec.to_json(),
                  st.sigmas, st.repeats, st.seed, st.redraw, st.walk, config.adaptive, config.tolerance, __version__,
                  *relative, *([] if st.metric == "top1" else [f"metric={st.metric}"]), *([code] if code else []))  # fmt: skip


def _walk(scan: _Scan, executor: Executor, chosen: list[Point], report: dict, tick: Callable[[float], None]) -> None:
    """The walking sweep: every chosen point's curve (stored ones taken when resuming), in point
    order in ``report`` as they finish."""
    keys = {p.index: digest(scan.stored, "point", p.index, p.tensor, scan.config.granularity) for p in chosen}
    finished = {p.index: c for p in chosen if (c := scan.take(keys[p.index])) is not None}
    todo = [p for p in chosen if p.index not in finished]
    tick(len(chosen) - len(todo))

    def order() -> list[dict]:
        return [finished[p.index] for p in chosen if p.index in finished]

    report["points"] = order()
    if todo:
        scale = (lambda p: None) if scan.scales is None else (lambda p: scan.scales[p.index])
        for point, curve in executor.walk(todo, scan.st, scan.base, scale, tick):
            finished[point.index] = curve
            report["points"] = order()
            scan.keep(keys[point.index], f"point {point.index}", curve)
    if all(p["status"] == FAILED for p in report["points"]):
        first = report["points"][0]
        raise WnError(f"every walked point failed; point {first['index']}: {first['reason']}")


def _global(scan: _Scan, executor: Executor, where: list[Point]) -> dict:
    """The global sweep's curve: every point of ``where`` noisy at once."""
    config, st, engine = scan.config, scan.st, scan.engine
    key = digest(scan.stored, "global", [p.index for p in where], config.granularity)
    curve = scan.take(key)
    if curve is not None:
        return curve
    scale = None if scan.scales is None else np.array([scan.scales[p.index] for p in where])
    if config.estimator == "sequential":
        ev = engine.global_noise(where, st, scale, scan.data)
        fitted = sequential_curve(engine, ev, scan.data, st, scan.base, config.tolerance, [1])
    else:
        with engine.round_cache() if config.adaptive else contextlib.nullcontext() as cache:

            def measure(sigmas: np.ndarray) -> Counts:
                return executor.global_counts(where, replace(st, sigmas=sigmas), scale, cache)

            fitted = measure_curve(measure, st, scan.base, config.adaptive, config.tolerance)
    curve = {"points": [p.index for p in where], **fitted}
    if scan.scales is not None:
        curve["activation_std"] = [scan.scales[p.index] for p in where]
    scan.keep(key, "global", curve)
    return curve


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
