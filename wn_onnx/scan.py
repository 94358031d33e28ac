"""A whole scan: model + data + noise → accuracy per (point, σ, repeat) → μ per point → report.

The report is a plain dict with the schema documented in the README ("Report JSON").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wn_onnx import __version__
from wn_onnx.data import Dataset, check_labels, check_shape
from wn_onnx.errors import WnError
from wn_onnx.evaluate import Counts, Engine, SweepSettings, providers_for, score
from wn_onnx.fit import fit_curve
from wn_onnx.graph_passes import find_points, select_points
from wn_onnx.modelio import LoadedModel

MODES = ("walking", "global", "both")
NONFINITE_TOLERANCE = 0.01  # a σ whose outputs are NaN/Inf more often than this is not fitted


@dataclass
class ScanRequest:
    mode: str = "both"
    at: str | None = None
    label_free: bool = False
    device: str = "cpu"
    threads: int = 0
    global_after_bn: bool = True  # inject after BatchNormalization in the global sweep too


def curve_json(st: SweepSettings, counts: Counts, chance: float, clean: float) -> dict:
    """Accuracy arrays plus the fit, in the report's per-curve keys."""
    acc = counts.accuracy
    overflow = counts.nonfinite.sum(axis=1) > NONFINITE_TOLERANCE * counts.total * counts.nonfinite.shape[1]
    fit = fit_curve(st.sigmas, acc, chance, counts.total, clean=clean, exclude=overflow).to_json()
    a_add, a_mul = st.spec.components(st.sigmas)
    out = {
        "sigmas": [float(s) for s in st.sigmas],
        "accuracy": [[float(a) for a in row] for row in acc],
        "nonfinite": [[int(v) for v in row] for row in counts.nonfinite],
        "mu": fit["mu"],
        "mu_err": fit["mu_err"],
        "a_max": fit["a_max"],
        "a_min": fit["a_min"],
        "status": fit["status"],
        "fit": {k: fit[k] for k in ("slope", "a_min_free", "chi2_red", "mu_threshold", "note", "drops")},
    }
    if st.spec.kind == "mixed":
        out["sigma_add"] = [float(s) for s in a_add]
        out["sigma_mul"] = [float(s) for s in a_mul]
    return out


def run_scan(
    loaded: LoadedModel,
    data: Dataset,
    st: SweepSettings,
    req: ScanRequest,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """Run the sweeps ``req`` asks for and return the report dict.

    ``progress(description, total)`` returns a ``tick(n)`` callback; pass None for silence.
    """
    if req.mode not in MODES:
        raise WnError(f"unknown --mode {req.mode!r}; choose walking, global or both")
    if st.repeats < 1:
        raise WnError("--repeats must be >= 1")
    if st.batch_size < 1:
        raise WnError("--batch-size must be >= 1")
    engine = Engine(loaded, providers_for(req.device), req.threads)
    all_points = find_points(loaded.model)
    chosen = select_points(all_points, req.at)

    # Clean pass: class count, clean accuracy, label-free targets.
    data = check_shape(data, loaded.input_shape, engine.dtype)
    clean_logits = np.concatenate([engine.clean_logits(x) for x, _ in data.batches(st.batch_size)])
    num_classes = loaded.num_classes or int(clean_logits.reshape(len(clean_logits), -1).shape[1])
    if num_classes < 2:
        raise WnError(f"{loaded.path}: output {loaded.output_name!r} has width {num_classes}; need class scores (≥ 2)")
    if req.label_free:
        data = Dataset(data.x, clean_logits.reshape(len(clean_logits), -1).argmax(axis=1), data.source)
    check_labels(data, num_classes)
    ok, bad = score(clean_logits, data.y)
    clean = float(ok.mean())
    chance = 1.0 / num_classes

    n_batches = -(-len(data) // st.batch_size)
    silent = progress or (lambda _d, _t: lambda _n: None)
    report: dict = {
        "wn_onnx_version": __version__,
        "model": loaded.path,
        "data": {"source": data.source, "samples": len(data), "label_free": req.label_free},
        "noise": st.spec.to_json(),
        "mode": req.mode,
        "seed": st.seed,
        "repeats": st.repeats,
        "common_random_numbers": not st.redraw,
        "clean_accuracy": clean,
        "clean_nonfinite": int(bad.sum()),
        "num_classes": num_classes,
        "chance": chance,
        "points": [],
        "global": None,
    }
    if req.mode in ("walking", "both"):
        tick = silent(f"walking {len(chosen)} points", len(chosen) * n_batches * st.repeats)
        for point in chosen:
            counts = engine.walk(point, data, st, tick)
            report["points"].append({**point.to_json(), **curve_json(st, counts, chance, clean)})
    if req.mode in ("global", "both"):
        where = chosen if req.global_after_bn else [p for p in chosen if p.op_type != "BatchNormalization"]
        if not where:
            raise WnError("the global sweep has no point left (all selected points are BatchNormalization outputs)")
        tick = silent(f"global noise at {len(where)} points", n_batches * st.repeats)
        counts = engine.global_sweep(where, data, st, tick)
        report["global"] = {"points": [p.index for p in where], **curve_json(st, counts, chance, clean)}
    return report
