"""Guided multi-execution (paper Section 8, Table 3): spend a budget of repeated layer
executions where the network is most sensitive, and measure what it buys.

Executing a point n times and averaging reduces its noise std by 1/√n. ``uniform`` spreads the
budget evenly; ``inverse-mu`` gives n_i ∝ 1/μ_i with sum-conserving rounding (every n_i ≥ 1);
``greedy`` spends executions one at a time where the measured accuracy gain is largest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wn_onnx.curve import prepared
from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import Point
from wn_onnx.graph_passes.fold_weights import weights_folded
from wn_onnx.graph_passes.weights import points_on
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.data import Dataset
from wn_onnx.io.model import LoadedModel, load_model
from wn_onnx.metrics import get_metric
from wn_onnx.noise import NoiseModel, NoiseSpec, noise_from_json
from wn_onnx.results.fit import fell, pessimistic
from wn_onnx.results.names import level_text
from wn_onnx.results.schema import read_report
from wn_onnx.scan_config import ScanConfig

STRATEGIES = ("uniform", "inverse-mu", "greedy")
ROBUST, FALLBACK = "not-reached", ("poor-fit", "no-drop-from-start", "bracketed")


def load_report(path: str | Path) -> dict:
    """A scan report with walking points and usable μ values, as planning needs."""
    p = Path(path)
    return plannable(read_report(p), str(p))


def plannable(report: dict, where: str = "report") -> dict:
    """``report`` when it has walking points and usable μ values; a clear error otherwise."""
    p = where
    if not report["points"]:
        raise WnError(f"{p}: no walking points in this report (run `wn-onnx scan --mode walking` or `both`)")
    for q in report["points"]:
        if q["mu"] is not None and not (isinstance(q["mu"], int | float) and np.isfinite(q["mu"]) and q["mu"] > 0):
            raise WnError(f"{p}: point {q['index']} has an invalid μ {q['mu']!r}")
    return report


def averaged_by_repeats(report: dict, where: str = "report") -> dict:
    """``report`` when repeated execution averages its noise away (what a plan buys); one clear
    error for weight noise (every execution reads the same programmed weights) and for noise models
    that do not average (quantisation is deterministic; a flipped stored bit stays flipped)."""
    if report.get("on") == "weights":
        raise WnError(f"{where}: a weight-noise report: executing a layer again reads the same perturbed weights, "
                      "so repeated execution does not average the noise away; plan on an activation-noise report")  # fmt: skip
    kind = (report.get("noise") or {}).get("kind")
    if kind in ("quant", "bitflip"):
        raise WnError(f"{where}: {kind} noise does not average away over repeated executions; plan on Gaussian noise")
    return report


def parse_budget(text: str | int | None, points: int) -> int:
    """Budget as a whole number ≥ number of points (every point executes at least once)."""
    if text is None:
        return 2 * points
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise WnError(f"the execution budget must be a whole number, got {text!r}") from None
    if not value.is_integer():
        raise WnError(f"the execution budget must be a whole number, got {text!r}")
    if value < points:
        raise WnError(
            f"a budget of {int(value)} executions is below the number of points ({points}): every point executes at least once"
        )
    return int(value)


def largest_remainder(target: np.ndarray, total: int, priority: np.ndarray) -> np.ndarray:
    """Integers summing to ``total``, each floor(target) or one more; ties broken by priority."""
    base = np.floor(target).astype(int)
    rest = total - int(base.sum())
    order = np.lexsort((-priority, -(target - base)))
    base[order[:rest]] += 1
    return base


def inverse_mu(mu: np.ndarray, budget: int, robust: np.ndarray | None = None) -> np.ndarray:
    """n_i ∝ 1/μ_i, Σ n_i = budget, n_i ≥ 1; ``robust`` points get exactly 1."""
    n = len(mu)
    robust = np.zeros(n, bool) if robust is None else np.asarray(robust, bool)
    weight = np.where(robust, 0.0, 1.0 / np.asarray(mu, np.float64))
    pinned = robust.copy()
    while True:  # give 1 to points whose share falls below 1, share the rest among the others
        free = ~pinned
        left = budget - int(pinned.sum())
        if not free.any():
            break
        share = np.zeros(n)
        share[free] = left * weight[free] / weight[free].sum()
        low = free & (share < 1)
        if not low.any():
            break
        pinned |= low
    plan = np.ones(n, int)
    free = ~pinned
    if free.any():
        plan[free] = largest_remainder(share[free], budget - int(pinned.sum()), weight[free])
    elif budget > n:  # everything robust: spread the surplus evenly
        plan = uniform(n, budget)
    return plan


def uniform(points: int, budget: int) -> np.ndarray:
    """Budget spread evenly; the remainder goes to the first points."""
    plan = np.full(points, budget // points)
    plan[: budget % points] += 1
    return plan


def greedy_evaluations(points: int, budget: int) -> int:
    """How many plans :func:`greedy` measures: the start, then every point for each extra execution."""
    return 1 + points * (budget - points)


def greedy(
    points: int, budget: int, accuracy: Callable[[np.ndarray], float], start: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict]]:
    """From one execution each, add executions one at a time where ``accuracy(plan)`` gains most."""
    plan = np.ones(points, int) if start is None else np.array(start, int)
    steps = []
    current = accuracy(plan)
    while plan.sum() < budget:
        gains = []
        for i in range(points):
            trial = plan.copy()
            trial[i] += 1
            gains.append(accuracy(trial))
        best = int(np.argmax(gains))
        plan[best] += 1
        steps.append({"point": best, "accuracy": float(gains[best]), "gain": float(gains[best] - current)})
        current = gains[best]
    return plan, steps


@dataclass
class PlanInput:
    """What a plan is computed from: the report's points, their μ and how μ is to be read."""

    indices: list[int]
    tensors: list[str]
    mu: np.ndarray
    robust: np.ndarray
    flags: list[str]

    @classmethod
    def from_report(cls, report: dict) -> PlanInput:
        pts = report["points"]
        mu, robust, flags = [], [], []
        for p in pts:
            status = p["status"]
            value = p["mu"] if p["mu"] is not None else p.get("fit", {}).get("mu_threshold")
            if status in ("bracketed", "poor-fit"):
                value = pessimistic(p)  # the bracket's low end: an unresolved point gets more executions
            robust.append(status == ROBUST and not fell(p, report.get("chance")))
            if robust[-1]:
                flags.append("not reached: counted as robust (1 execution)")
            elif status == ROBUST:
                flags.append("not reached, but accuracy fell: planned at its lower bound")
            elif status in FALLBACK:
                flags.append(f"{status}: μ is the low end of its bracket" if status != "no-drop-from-start"
                             else f"{status}: μ is the smallest σ (an upper bound)")  # fmt: skip
            elif status == "failed" or value is None:
                flags.append(f"{status}: μ unknown, planned as the most sensitive point")
                value = None
            else:
                flags.append("")
            mu.append(np.nan if value is None else value)
        mu_arr = np.array(mu, float)
        if np.isnan(mu_arr).any():  # unknown μ: as fragile as the most fragile known point
            known = mu_arr[~np.isnan(mu_arr) & ~np.array(robust)]
            mu_arr[np.isnan(mu_arr)] = known.min() if known.size else 1.0
        return cls([p["index"] for p in pts], [p["tensor"] for p in pts], mu_arr, np.array(robust), flags)


@dataclass
class Plan:
    """Executions per walked point (paper Table 3) and, when measured, what each strategy scored
    under global noise (``evaluation``; ``greedy_steps``: the greedy search's path)."""

    strategy: str
    budget: int
    executions: list[int]
    points: list[dict]
    model: str | None
    noise: dict | None
    granularity: str
    evaluation: dict | None = None
    greedy_steps: list[dict] | None = None

    def to_json(self) -> dict:
        """The plan JSON ``wn-onnx plan --out`` writes and ``apply-plan`` reads."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("evaluation", "greedy_steps")}
        return data | {k: getattr(self, k) for k in ("evaluation", "greedy_steps") if getattr(self, k) is not None}


@dataclass
class PlanEvaluation:
    """How plans are measured: ``accuracy(plan, seed, repeats)`` per noise draw at the global strength
    ``sigma`` of ``noise`` (one draw set for every plan of a seed)."""

    accuracy: Callable[[np.ndarray, int, int], np.ndarray]
    sigma: float
    noise: dict
    repeats: int
    seed: int


def make_plan(report: dict, budget: int | str | None, strategy: str, measured: Sequence[str] = (),
              evaluation: PlanEvaluation | None = None) -> Plan:  # fmt: skip
    """The ``strategy`` plan of ``budget`` executions for ``report`` (averaged over its repeats),
    and the ``measured`` strategies' accuracies under ``evaluation`` (greedy needs one: it selects
    on draws of seed + 1, a quarter of the repeats, at least 5)."""
    unknown = [name for name in (strategy, *measured) if name not in STRATEGIES]
    if unknown:
        raise WnError(f"unknown strategy {unknown[0]!r}; choose {', '.join(STRATEGIES)}")
    inp = PlanInput.from_report(report)
    n = len(inp.indices)
    total = parse_budget(budget, n)
    plans = {"uniform": uniform(n, total), "inverse-mu": inverse_mu(inp.mu, total, inp.robust)}
    steps = None
    if strategy == "greedy" or "greedy" in measured:
        if evaluation is None:
            raise WnError("the greedy strategy measures plans: it needs the model and data")
        ev = evaluation
        plans["greedy"], steps = greedy(n, total, lambda p: float(ev.accuracy(p, ev.seed + 1, max(5, ev.repeats // 4)).mean()))
    results = {}
    for name in measured:
        assert evaluation is not None
        acc = evaluation.accuracy(plans[name], evaluation.seed, evaluation.repeats)
        results[name] = {"executions": [int(k) for k in plans[name]], "accuracy_mean": float(acc.mean()),
                         "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                         "accuracy": [float(a) for a in acc]}  # fmt: skip
    chosen = plans[strategy]
    points = [{"index": i, "tensor": t, "mu": float(m) if np.isfinite(m) else None, "executions": int(k), "flag": f}
              for i, t, m, k, f in zip(inp.indices, inp.tensors, inp.mu, chosen, inp.flags, strict=True)]  # fmt: skip
    evaluated = None
    if measured:
        assert evaluation is not None
        evaluated = {"sigma": evaluation.sigma, "noise": evaluation.noise, "repeats": evaluation.repeats,
                     "seed": evaluation.seed, "plans": results}  # fmt: skip
    return Plan(strategy, total, [int(k) for k in chosen], points, report.get("model"), report.get("noise"),
                report.get("granularity", "op"), evaluated, steps if strategy == "greedy" else None)  # fmt: skip


def plan_evaluation(report: dict, loaded: LoadedModel, points: list[Point], data: Dataset, noise: NoiseModel | None,
                    sigma: float | str, repeats: int, seed: int, config: ScanConfig,
                    tick: Callable[[], None] = lambda: None) -> PlanEvaluation:  # fmt: skip
    """Plans measured on ``data`` under global ``noise`` (default: the report's) at ``sigma`` (a
    number, or ``"global-mu"``: the report's global μ), with the configuration's engine settings."""
    if report.get("sigma_scale", "absolute") != "absolute":
        raise WnError("--evaluate and greedy take a report with absolute σ (scan --sigma-scale absolute)")
    if not (isinstance(repeats, int) and 1 <= repeats <= MAX_REPEATS) or not (isinstance(seed, int) and 0 <= seed < MAX_SEED):
        raise WnError(f"plans are measured on 1 to {MAX_REPEATS} draws of a seed in [0, {MAX_SEED - 1}], "
                      f"got {repeats!r} draws of seed {seed!r}")  # fmt: skip
    spec = noise if noise is not None else NoiseSpec.from_json(report.get("noise"))
    if sigma == "global-mu":
        if (report.get("global") or {}).get("mu") is None:
            raise WnError("the report has no global μ; pass --sigma VALUE")
        level = float(report["global"]["mu"])
    else:
        try:
            level = float(sigma)
        except ValueError:
            raise WnError(f"--sigma must be a number or 'global-mu', got {sigma!r}") from None
    metric = config.metric
    engine, data, _base = prepared(loaded, data, config)

    def accuracy(plan: np.ndarray, s: int, r: int) -> np.ndarray:
        acc = engine.plan_accuracy(points, spec, level, plan, data, r, s, config.batch_size, metric, config.metric_timeout)
        tick()
        return acc

    return PlanEvaluation(accuracy, level, spec.to_json(), repeats, seed)


def match_model(report: dict, model_path: str | Path, granularity: str | None = None) -> tuple[LoadedModel, list[Point]]:
    """Load the model and check the report describes it (same point tensors: its weight points for a
    weight report, else its points at the report's granularity unless ``granularity`` says otherwise;
    reports before it was recorded: op)."""
    weights = report.get("on") == "weights"
    loaded = weights_folded(load_model(model_path)) if weights else load_model(model_path)
    found = points_on(loaded.model, report.get("on", "activations"), granularity or report.get("granularity", "op"), str(model_path))
    by_index = {p.index: p for p in found}
    chosen = []
    for q in report["points"]:
        p = by_index.get(q["index"])
        if p is None or p.tensor != q["tensor"]:
            raise WnError(f"the report does not describe {model_path}: its {'weight ' if weights else ''}point {q['index']} "
                          f"is {q['tensor']!r}, the model's is {p.tensor if p else 'missing'!r}")  # fmt: skip
        chosen.append(p)
    return loaded, chosen


def digital_order(report: dict) -> list[int]:
    """Positions of a weight report's points, the least robust first: the layers to keep digital
    (noise-free) first. A layer's μ is read pessimistically (results.fit.pessimistic: a bracket's
    low end); one with no μ at all (failed, no drop from the start) comes first."""
    if report.get("on") != "weights":
        raise WnError("--digital splits the layers of a weight-noise report (scan --on weights): this report's noise "
                      "acts on activations")  # fmt: skip
    lows = [pessimistic(p) for p in report["points"]]
    return sorted(range(len(lows)), key=lambda i: (lows[i] is not None, lows[i] or 0.0, i))


def check_digital(k: int, points: int) -> None:
    if not 0 <= k <= points:
        raise WnError(f"--digital {k}: the report has {points} weight layers; keep 0 to {points} of them digital")


def digital_accuracy(
    engine: Engine, points: list[Point], keep: list[int], st: SweepSettings, data: Dataset, clean: float
) -> np.ndarray:
    """Accuracy per repeat at the single strength of ``st`` with the layers at positions ``keep``
    digital (noise-free) and every other layer analog: one whole-graph run per (batch, repeat) with
    the analog weights perturbed. A layer's draw depends only on it and the repeat (engine.weights),
    so every split sees the same chips. Every layer digital: the ``clean`` accuracy."""
    analog = [p for i, p in enumerate(points) if i not in set(keep)]
    if not analog:
        return np.full(st.repeats, clean)
    return engine.global_sweep(analog, data, st, lambda _n: None).accuracy[0]


def digital_plan(
    engine: Engine, report: dict, points: list[Point], k: int, st: SweepSettings, data: Dataset, clean: float
) -> dict:
    """For K = 0…k: the accuracy with the K least robust layers digital (guided by μ) and with the
    first K layers digital (uniform choice), and what each digital layer gains."""
    check_digital(k, len(points))
    order = digital_order(report)
    rows = []
    for kk in range(k + 1):
        guided, first = order[:kk], list(range(kk))
        g = digital_accuracy(engine, points, guided, st, data, clean)
        u = g if sorted(guided) == first else digital_accuracy(engine, points, first, st, data, clean)
        rows.append({"digital": kk, "guided": [points[i].index for i in guided], "uniform": [points[i].index for i in first],
                     "guided_accuracy": float(g.mean()), "guided_std": float(g.std(ddof=1)) if len(g) > 1 else 0.0,
                     "uniform_accuracy": float(u.mean()), "uniform_std": float(u.std(ddof=1)) if len(u) > 1 else 0.0})  # fmt: skip
    for prev, row in itertools.pairwise(rows):
        row["gain"] = row["guided_accuracy"] - prev["guided_accuracy"]
    return {"digital": k, "layers": [points[i].index for i in order[:k]], "rows": rows}


def digital_strength(report: dict, at_time: str | None) -> tuple[np.ndarray, str]:
    """The one strength a digital split is evaluated at, and how it reads: ``at_time`` in the
    report's levels (``1y``), or the largest the scan measured."""
    if at_time is None:
        top = max((max(p["sigmas"]) for p in report["points"] if p["sigmas"]), default=None)
        if top is None:
            raise WnError("the report has no measured level; give --at-time")
        return np.array([top]), level_text(report, top)
    strength = noise_from_json(report.get("noise")).levels(at_time)
    if strength.size != 1:
        raise WnError(f"--at-time takes one level, got {at_time!r}")
    return strength, at_time


def digital_evaluation(report: dict, k: int, at_time: str | None, loaded: LoadedModel, points: list[Point],
                       data: Dataset, repeats: int, seed: int, config: ScanConfig) -> dict:  # fmt: skip
    """The accuracy at ``at_time`` of every split K ≤ k (:func:`digital_plan`), on chips other
    than the scan's (its repeats chose the order: the evaluation is out of sample)."""
    spec = noise_from_json(report.get("noise"))
    strength, text = digital_strength(report, at_time)
    metric = get_metric(report.get("metric") or "top1").name
    engine, data, base = prepared(loaded, data, config.replace(metric=metric))
    st = SweepSettings(strength, spec, repeats, int(report.get("seed", 0)) + 1 + seed, config.batch_size, metric=metric)
    plan = digital_plan(engine, report, points, k, st, data, base.clean)
    return {"level": float(spec.axis.level(strength[0])), "level_text": text, "noise": report.get("noise"),
            "repeats": repeats, "seed": seed, "clean_accuracy": base.clean, "rows": plan["rows"]}  # fmt: skip


MAX_EXECUTIONS = 10_000  # repetitions of one point in a deployed model


def deployable(model_path: str | Path, plan: dict, noise: NoiseModel | None = None, where: str = "plan"):
    """The model of ``model_path`` as written (every output, the declared batch) with noise nodes
    that execute point i n_i times, σ as graph inputs: what ``apply-plan`` saves. ``plan`` is a
    plan's JSON, checked here; ``noise`` defaults to the plan's."""
    from wn_onnx.graph_passes import InsertNoisePass
    from wn_onnx.io.model import load_as_written

    try:
        tensors = [p["tensor"] for p in plan["points"]]
        indices = [p["index"] for p in plan["points"]]
        counts = plan["executions"]
    except (KeyError, TypeError) as err:
        raise WnError(f"{where}: not a wn-onnx plan ({type(err).__name__}: {str(err)[:200]})") from None
    if not (all(isinstance(t, str) for t in tensors) and all(type(i) is int for i in indices)):
        raise WnError(f"{where}: not a wn-onnx plan (points need an integer index and a tensor name)")
    if not isinstance(counts, list) or len(counts) != len(tensors):
        raise WnError(f"{where}: 'executions' must list one count per point ({len(tensors)})")
    if not all(type(n) is int and 1 <= n <= MAX_EXECUTIONS for n in counts):
        raise WnError(f"{where}: executions must be whole numbers in [1, {MAX_EXECUTIONS}], got {counts}"[:300])
    report_like = {"points": [{"index": i, "tensor": t} for i, t in zip(indices, tensors, strict=True)],
                   "granularity": plan.get("granularity", "op")}  # fmt: skip
    match_model(report_like, model_path)
    spec = noise if noise is not None else NoiseSpec.from_json(plan.get("noise"))
    model = load_as_written(model_path)
    InsertNoisePass(tensors, spec, source="drawn", repetitions=counts)(model)
    return model
