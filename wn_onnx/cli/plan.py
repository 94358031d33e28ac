"""``wn-onnx plan`` and ``wn-onnx apply-plan``: guided multi-execution from a scan report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from wn_onnx.cli.common import Kind, Order, out, write_json
from wn_onnx.errors import WnError


def _match_model(report: dict, model_path: Path):
    """Load the model and check the report describes it (same point tensors)."""
    from wn_onnx.graph_passes import find_points
    from wn_onnx.modelio import load_model

    loaded = load_model(model_path)
    by_index = {p.index: p for p in find_points(loaded.model)}
    chosen = []
    for q in report["points"]:
        p = by_index.get(q["index"])
        if p is None or p.tensor != q["tensor"]:
            raise WnError(
                f"the report does not describe {model_path}: its point {q['index']} is {q['tensor']!r}, the model's is {p.tensor if p else 'missing'!r}"
            )
        chosen.append(p)
    return loaded, chosen


def plan_command(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="A scan report JSON (walking points with μ).")],
    budget: Annotated[str | None, typer.Option(help="Total executions (default: 2 × number of points).")] = None,
    strategy: Annotated[
        str, typer.Option(help="uniform · inverse-mu (the paper) · greedy (needs --model/--data).")
    ] = "inverse-mu",
    evaluate: Annotated[bool, typer.Option(help="Measure uniform, inverse-mu and greedy under global noise.")] = False,
    model: Annotated[Path | None, typer.Option(help="The scanned model (for --evaluate and greedy).")] = None,
    data: Annotated[Path | None, typer.Option(help="Data .npz (x, y) for --evaluate and greedy.")] = None,
    noise: Annotated[Kind | None, typer.Option(help="Noise for --evaluate (default: the report's).")] = None,
    order: Annotated[Order | None, typer.Option(help="Mixed noise order.")] = None,
    sigma_ratio: Annotated[float | None, typer.Option(help="Mixed: σ_add = A·r, σ_mul = A·(1−r).")] = None,
    sigma: Annotated[
        str, typer.Option(help="Global σ for --evaluate: a number or 'global-mu' (the report's global μ).")
    ] = "global-mu",
    repeats: Annotated[int, typer.Option(help="Noise draws per plan (same draws for every plan).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation draws (greedy selects on seed+1).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use the first N samples only.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan JSON on stdout.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the plan JSON here.")] = None,
) -> None:
    """Spread a budget of repeated executions over the points, guided by μ (paper Table 3)."""
    import numpy as np

    from wn_onnx.data import check_labels, check_shape, load_npz
    from wn_onnx.engine import Engine, providers_for
    from wn_onnx.noise import NoiseSpec
    from wn_onnx.plan import STRATEGIES, PlanInput, greedy, inverse_mu, load_report, parse_budget, plan_json, uniform

    if strategy not in STRATEGIES:
        raise WnError(f"unknown --strategy {strategy!r}; choose {', '.join(STRATEGIES)}")
    report = load_report(report_path)
    inp = PlanInput.from_report(report)
    total = parse_budget(budget, len(inp.indices))
    needs_eval = evaluate or strategy == "greedy"
    engine = accuracy = None
    results: dict = {}
    if needs_eval:
        if model is None or data is None:
            raise WnError("--evaluate and --strategy greedy need --model and --data")
        loaded, points = _match_model(report, model)
        engine = Engine(loaded, providers_for("cpu"))
        dataset = check_shape(load_npz(data, limit), loaded.input_shape, engine.dtype)
        check_labels(dataset, report.get("num_classes") or loaded.num_classes or 0)
        spec = (
            NoiseSpec(noise.value, order.value if order else None, sigma_ratio)
            if noise
            else NoiseSpec.from_json(report.get("noise"))
        )
        if sigma == "global-mu":
            g = report.get("global") or {}
            if g.get("mu") is None:
                raise WnError("the report has no global μ; pass --sigma VALUE")
            level = float(g["mu"])
        else:
            try:
                level = float(sigma)
            except ValueError:
                raise WnError(f"--sigma must be a number or 'global-mu', got {sigma!r}") from None

        def accuracy(plan: np.ndarray, s: int = seed, r: int = repeats) -> np.ndarray:
            return engine.plan_accuracy(points, spec, level, plan, dataset, r, s)

    plans = {"uniform": uniform(len(inp.indices), total), "inverse-mu": inverse_mu(inp.mu, total, inp.robust)}
    greedy_steps = None
    if strategy == "greedy" or evaluate:
        plans["greedy"], greedy_steps = greedy(
            len(inp.indices), total, lambda p: float(accuracy(p, seed + 1, max(5, repeats // 4)).mean())
        )
    if evaluate:
        for name, plan in plans.items():
            acc = accuracy(plan)
            results[name] = {
                "executions": [int(n) for n in plan],
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "accuracy": [float(a) for a in acc],
            }
    extra = (
        {"evaluation": {"sigma": level, "noise": spec.to_json(), "repeats": repeats, "seed": seed, "plans": results}}
        if evaluate
        else {}
    )
    if greedy_steps is not None and strategy == "greedy":
        extra["greedy_steps"] = greedy_steps
    payload = plan_json(strategy, total, plans[strategy], inp, report, extra)
    if out_path:
        write_json(out_path, payload)
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    table = Table(title=f"{strategy} plan · budget {total}")
    for col in ("#", "tensor", "μ", "executions", "note"):
        table.add_column(col, overflow="fold")
    for p in payload["points"]:
        table.add_row(
            str(p["index"]), p["tensor"], "—" if p["mu"] is None else f"{p['mu']:.3g}", str(p["executions"]), p["flag"]
        )
    out.print(table)
    if evaluate:
        t2 = Table(title=f"accuracy at global σ = {level:.3g} ({repeats} draws, the same for every plan)")
        for col in ("plan", "executions", "accuracy"):
            t2.add_column(col)
        for name, r in results.items():
            t2.add_row(name, ",".join(map(str, r["executions"])), f"{r['accuracy_mean']:.2%} ± {r['accuracy_std']:.2%}")
        out.print(t2)


def apply_plan_command(
    model: Annotated[Path, typer.Argument(help="ONNX model the plan was made for.")],
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan JSON from `wn-onnx plan --out`.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the multi-execution model.")],
    noise: Annotated[Kind | None, typer.Option(help="Noise kind (default: the plan's).")] = None,
    order: Annotated[Order | None, typer.Option(help="Mixed noise order.")] = None,
) -> None:
    """Write a deployable model: noise nodes that execute point i n_i times, σ as inputs."""
    import onnx_ir as ir

    from wn_onnx.graph_passes import InsertNoisePass
    from wn_onnx.noise import NoiseSpec

    try:
        plan = json.loads(plan_path.read_text())
        tensors = [p["tensor"] for p in plan["points"]]
        counts = [int(n) for n in plan["executions"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise WnError(f"{plan_path}: not a wn-onnx plan ({type(err).__name__}: {err})") from None
    report_like = {"points": [{"index": p["index"], "tensor": p["tensor"]} for p in plan["points"]]}
    loaded, _ = _match_model(report_like, model)
    spec = (
        NoiseSpec(noise.value, order.value if order else None, 0.5 if noise.value == "mixed" else None)
        if noise
        else NoiseSpec.from_json(plan.get("noise"))
    )
    m = loaded.fresh()
    InsertNoisePass(tensors, spec, source="drawn", repetitions=counts)(m)
    ir.save(m, out_path)
    inputs = ", ".join(v.name for v in m.graph.inputs)
    out.print(f"{out_path}: {len(tensors)} noise points, executions {counts}; inputs: {inputs}")
