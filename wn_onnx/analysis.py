"""Why a network tolerates noise: self-binarisation, mixed-noise maps, weight magnitudes.

* :func:`binarize` — with strong noise at one point, the activations after it turn bimodal
  (paper Fig. 4). Histograms with and without noise, and the threshold test: replace the
  activation after the noisy point by two or three levels (zero and the mean of each outer
  peak, thresholds from the histogram) and compare accuracy.
* :func:`mixed_grid` — accuracy over a (σ_mul, σ_add) grid for both orders (Fig. 6).
* :func:`weight_magnitudes` — mean |w| of each learnable layer from ONNX initializers (Table 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx import numpy_helper

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.engine.draws import draw_at
from wn_onnx.engine.sessions import run
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import (
    ExposeValuesPass,
    ExtractSuffixPass,
    InsertNoisePass,
    Point,
    data_dependent,
    find_points,
    suffix_inputs,
)
from wn_onnx.graph_passes.insert_noise import SIGMA_INPUT
from wn_onnx.graph_passes.noise_functions import sigma_inputs
from wn_onnx.graph_passes.weights import points_on
from wn_onnx.io.data import Dataset
from wn_onnx.metrics import get_metric, samples_first, score
from wn_onnx.noise import NoiseSpec

BINARIZE_STREAM = 3


@dataclass
class Levels:
    """A quantiser: values below ``low_cut`` → ``low``, above ``high_cut`` → ``high``, else 0."""

    low_cut: float
    high_cut: float
    low: float
    high: float

    def apply(self, v: np.ndarray) -> np.ndarray:
        return np.where(v < self.low_cut, self.low, np.where(v > self.high_cut, self.high, 0.0)).astype(v.dtype)

    @property
    def count(self) -> int:
        return 2 if self.low == 0.0 else 3


def find_levels(values: np.ndarray, iterations: int = 50) -> Levels:
    """Two or three levels from the histogram: 1-D k-means with the middle level pinned at 0.

    Two levels (0 and the positive peak) when the values are non-negative (after a ReLU),
    three (negative peak, 0, positive peak) otherwise; cuts sit halfway between levels.
    """
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise WnError("empty histogram: the tapped activation holds no finite value")
    low = float(v.min()) if v.min() < 0 else 0.0
    high = float(v.max()) if v.max() > 0 else 0.0
    for _ in range(iterations):
        low_cut, high_cut = low / 2, high / 2
        neg, pos = v[v < low_cut], v[v > high_cut]
        new_low = float(neg.mean()) if neg.size and low < 0 else 0.0
        new_high = float(pos.mean()) if pos.size and high > 0 else 0.0
        if new_low == low and new_high == high:
            break
        low, high = new_low, new_high
    return Levels(low / 2, high / 2, low, high)


def histogram(values: np.ndarray, bins: int = 80) -> dict:
    """Linear and log-|x| histograms of the finite values (JSON-ready)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise WnError("empty histogram: the tapped activation holds no finite value")
    counts, edges = np.histogram(v, bins=bins)
    mag = np.abs(v[v != 0])
    log = {"counts": [], "edges": []}
    if mag.size:
        lc, le = np.histogram(np.log10(mag), bins=bins)
        log = {"counts": lc.tolist(), "edges": (10**le).tolist()}
    return {
        "counts": counts.tolist(),
        "edges": edges.tolist(),
        "log_abs": log,
        "zeros": int(np.sum(v == 0)),
        "size": int(v.size),
    }


def _point(points: list[Point], index: int) -> Point:
    if not 0 <= index < len(points):
        raise WnError(f"point index {index} out of range (the model has {len(points)} points: 0-{len(points) - 1})")
    return points[index]


def binarize(
    engine: Engine,
    data: Dataset,
    at: int,
    spec: NoiseSpec,
    sigma: float,
    seed: int = 0,
    follow: int = 3,
    quantize_at: int | None = None,
    granularity: str = "layer",
    metric: str = "top1",
    batch_size: int = 1024,
    metric_timeout: float | None = None,
) -> dict:
    """Self-binarisation at point ``at`` under noise σ: histograms and the threshold test.

    Accuracy is reported clean, noisy, noisy with point ``quantize_at`` replaced by its levels
    (``quantized``), and — the contrast — clean with that point's clean activation replaced by
    levels fitted to it (``clean_quantized``): a network that self-binarised under noise keeps
    its accuracy on levels, one that did not loses it.
    """
    loaded = engine.loaded
    points = find_points(loaded.model, granularity)
    noisy_pt = _point(points, at)
    q = _point(points, quantize_at if quantize_at is not None else min(at + 1, len(points) - 1))
    if q.index <= at:
        raise WnError(f"the quantized point must come after the noisy point {at}")
    if q.tensor == loaded.output_name:
        raise WnError("the point after the noisy one is the output; nothing downstream to test")
    watched = points[at : at + 1 + follow]
    noisy_session, suffix_session, suffix_needs, renamed, sigma_feeds = _binarize_graphs(engine, noisy_pt, q, watched, spec, sigma)

    clean_vals: dict[str, list] = {p.tensor: [] for p in watched}
    noisy_vals: dict[str, list] = {p.tensor: [] for p in watched}
    correct = {"clean": 0, "noisy": 0, "quantized": 0, "clean_quantized": 0}
    size = engine.clean_batch(data, batch_size)
    levels = clean_levels = None
    scorer = get_metric(metric, metric_timeout)
    out_axis = engine.output_axis(data.x)  # where the model's output holds the samples (metrics.score)

    def samples(out: np.ndarray) -> np.ndarray:
        return samples_first(out, out_axis)

    for stage in ("collect", "test"):
        for b, (first, x, y, real) in enumerate(engine.batches(data, size)):
            rows = slice(0, real)  # padding rows of a fixed-batch model stay out of the histograms
            clean = engine.run_values(x, [p.tensor for p in watched] + suffix_needs + [loaded.output_name])
            feeds = {**engine.routes.feeds(x), **sigma_feeds}
            reference = samples(clean[loaded.output_name])
            tapped = clean[noisy_pt.tensor]
            axis = engine.sample_axis(noisy_pt.tensor, x)
            z = draw_at(seed, BINARIZE_STREAM, (at,), tapped.shape, axis, spec.draws, tapped.dtype, first, b)
            feeds.update(zip(("wn_z_0", "wn_z2_0"), z, strict=False))
            names = [o.name for o in noisy_session.get_outputs()]
            got = dict(zip(names, run(noisy_session, names, feeds), strict=True))
            got.update(engine.routes.feeds(x))
            if stage == "collect":
                for p in watched:
                    step = max(1, clean[p.tensor][rows].size // 20000)
                    clean_vals[p.tensor].append(clean[p.tensor][rows].ravel()[::step])
                    noisy_vals[p.tensor].append(got[renamed.get(p.tensor, p.tensor)][rows].ravel()[::step])
                correct["clean"] += score(scorer, reference, reference, y, real, out_axis)[0].sum()
                correct["noisy"] += score(scorer, reference, samples(got[loaded.output_name]), y, real, out_axis)[0].sum()
            else:
                for key, source, lv in (("quantized", got, levels), ("clean_quantized", clean, clean_levels)):
                    fed = {n: source[renamed.get(n, n) if source is got else n] for n in suffix_needs}
                    fed[q.tensor] = lv.apply(fed[q.tensor])
                    out = run(suffix_session, (loaded.output_name,), fed)[0]
                    correct[key] += score(scorer, reference, samples(out), y, real, out_axis)[0].sum()
        if stage == "collect":
            levels = find_levels(np.concatenate(noisy_vals[q.tensor]))
            clean_levels = find_levels(np.concatenate(clean_vals[q.tensor]))
    return _binarize_result(noisy_pt, q, spec, sigma, levels, {k: float(v / len(data)) for k, v in correct.items()},
                            watched, clean_vals, noisy_vals)  # fmt: skip


def _binarize_graphs(engine: Engine, noisy_pt: Point, q: Point, watched: list[Point], spec: NoiseSpec, sigma: float):
    """The sessions of the binarisation test: the graph with fed noise at ``noisy_pt`` only and
    everything downstream tapped, and the suffix from the quantized point ``q``; plus the suffix's
    inputs, the noisy tensor's tapped name and the σ feeds."""
    loaded = engine.loaded
    model = loaded.fresh()
    suffix_needs = suffix_inputs(model.graph, q.tensor, data_dependent(model.graph))
    InsertNoisePass([noisy_pt.tensor], spec, source="fed")(model)
    renamed = {
        noisy_pt.tensor: f"{noisy_pt.tensor}__noisy" if noisy_pt.tensor != loaded.output_name else noisy_pt.tensor
    }
    taps = [renamed.get(t, t) for t in dict.fromkeys([p.tensor for p in watched] + suffix_needs)]
    ExposeValuesPass([t for t in taps if t not in loaded.inputs])(model)
    suffix = loaded.fresh()
    ExtractSuffixPass(suffix_needs, [loaded.output_name])(suffix)
    sigma_feeds = {
        SIGMA_INPUT[comp]: np.array([value], np.float32)
        for comp, value in zip(("sigma_add", "sigma_mul"), spec.components(sigma), strict=True)
        if comp in sigma_inputs(spec)
    }
    return engine.session(model), engine.session(suffix), suffix_needs, renamed, sigma_feeds


def _binarize_result(noisy_pt: Point, q: Point, spec: NoiseSpec, sigma: float, levels, accuracy: dict,
                     watched: list[Point], clean_vals: dict, noisy_vals: dict) -> dict:  # fmt: skip
    """The binarisation test's JSON: the points, the levels, the accuracies and the histograms."""
    return {
        "point": noisy_pt.to_json(),
        "quantized_point": q.to_json(),
        "noise": {**spec.to_json(), "sigma": sigma},
        "levels": {
            "count": levels.count,
            "values": [levels.low, 0.0, levels.high],
            "cuts": [levels.low_cut, levels.high_cut],
        },
        "accuracy": accuracy,
        "histograms": {
            p.tensor: {
                "index": p.index,
                "op_type": p.op_type,
                "clean": histogram(np.concatenate(clean_vals[p.tensor])),
                "noisy": histogram(np.concatenate(noisy_vals[p.tensor])),
            }
            for p in watched
        },
    }


def mixed_grid(
    engine: Engine,
    data: Dataset,
    at: int,
    order: str,
    sigma_mul: np.ndarray,
    sigma_add: np.ndarray,
    repeats: int = 3,
    seed: int = 0,
    granularity: str = "layer",
    metric: str = "top1",
    batch_size: int = 1024,
    metric_timeout: float | None = None,
    on: str = "activations",
) -> dict:
    """Accuracy at point ``at`` (of ``granularity``; ``on="weights"``: weight point ``at``, additive
    σ relative to the layer's max|W|) for every (σ_mul, σ_add) pair, one order."""
    point = _point(points_on(engine.loaded.model, on, granularity, engine.loaded.path), at)
    grid = np.zeros((len(sigma_mul), len(sigma_add)))
    spread = np.zeros_like(grid)
    for i, sm in enumerate(sigma_mul):
        spec = NoiseSpec("mixed", order, sigma_mul=float(sm))
        counts = engine.walk(
            point,
            data,
            SweepSettings(np.asarray(sigma_add, float), spec, repeats, seed, batch_size, metric=metric,
                          metric_timeout=metric_timeout),
            lambda _n: None,
        )
        grid[i] = counts.accuracy.mean(axis=1)
        spread[i] = counts.accuracy.std(axis=1)
    return {"point": point.to_json(), "on": on, "order": order, "sigma_mul": [float(s) for s in sigma_mul], "sigma_add": [float(s) for s in sigma_add],
            "accuracy": grid.tolist(), "accuracy_std": spread.tolist()}  # fmt: skip


WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def weight_magnitudes(path: str) -> list[dict]:
    """Mean |w| of every learnable layer's weight initializer (those computed from constants folded
    first, as a weight scan sees them), in graph order, each named as ``wn-onnx points
    --granularity op`` names it: the point index and tensor of the layer's output (the paper's
    models have the same points at both granularities)."""
    from wn_onnx.graph_passes.fold_weights import weights_folded
    from wn_onnx.io.model import load_model

    loaded = weights_folded(load_model(path))
    points = {p.tensor: p.index for p in find_points(loaded.model, "op")}
    proto = ir.to_proto(loaded.model)
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        slot = WEIGHT_OPS.get(node.op_type)
        if slot is None or len(node.input) <= slot:
            continue
        name = node.input[slot]
        if name not in inits:
            continue
        w = numpy_helper.to_array(inits[name])
        out.append(
            {
                "point": points.get(node.output[0]),
                "tensor": node.output[0],
                "layer": node.name or name,
                "op_type": node.op_type,
                "weight": name,
                "shape": list(w.shape),
                "mean_abs": float(np.abs(w).mean()),
            }
        )
    if not out:
        raise WnError(f"{path}: no Conv/Gemm/MatMul weight initializers found")
    return out


def weight_ratio(a: list[dict], b: list[dict]) -> list[dict]:
    """Layer-wise mean |w| ratio b/a (Table 2); layers matched by position and op type."""
    if len(a) != len(b) or any(x["op_type"] != y["op_type"] for x, y in zip(a, b, strict=True)):
        raise WnError("the two models have different learnable layers; cannot compare them layer by layer")
    return [
        {**y, "ratio": y["mean_abs"] / x["mean_abs"] if x["mean_abs"] else float("inf")}
        for x, y in zip(a, b, strict=True)
    ]
