"""``wn-onnx plan`` and ``wn-onnx apply-plan``: guided multi-execution from a scan report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from wn_onnx.cli.common import (
    METRIC_HELP,
    BatchSizeOption,
    DataDirOption,
    DataOption,
    DatasetOption,
    FeedOption,
    Granularity,
    Kind,
    LabelsOption,
    LimitMode,
    LimitModeOption,
    LimitOption,
    MemoryOption,
    MetricTimeoutOption,
    OrderOption,
    SigmaRatioOption,
    SplitOption,
    Strategy,
    ThreadsOption,
    err,
    load_data,
    memory_bytes,
    noise_spec,
    out,
    progress_bar,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, read_text, write_json
from wn_onnx.results.names import shorten

GREEDY_MAX_POINTS = 20  # above this, --evaluate leaves greedy out unless asked: it measures points × extra budget plans
MAX_EXECUTIONS = 10_000  # repetitions of one point in a deployed model


def match_model(report: dict, model_path: Path, granularity: str | None = None):
    """Load the model and check the report describes it (same point tensors: its weight points for a
    weight report, else its points at the report's granularity unless ``granularity`` says otherwise;
    reports before it was recorded: op)."""
    from wn_onnx.graph_passes.weights import points_on
    from wn_onnx.io.model import load_model

    loaded = load_model(model_path)
    weights = report.get("on") == "weights"
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


def _strategies(text: str | None, points: int, budget: int) -> tuple[list[str], str | None]:
    """The strategies ``--evaluate`` measures, and a note when greedy was left out for its cost."""
    from wn_onnx.planner import STRATEGIES, greedy_evaluations

    if text is None:
        if points <= GREEDY_MAX_POINTS:
            return list(STRATEGIES), None
        return ["uniform", "inverse-mu"], (
            f"greedy left out: {points} points (> {GREEDY_MAX_POINTS}) would take {greedy_evaluations(points, budget)} "
            "plan evaluations; ask for it with --strategies uniform,inverse-mu,greedy"
        )
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise WnError(f"--strategies {text!r}: choose from {', '.join(STRATEGIES)} (comma-separated)")
    return names, None


def plan_command(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="A scan report JSON (walking points with μ).")],
    budget: Annotated[str | None, typer.Option(help="Total executions (default: 2 × number of points).")] = None,
    strategy: Annotated[
        Strategy, typer.Option(help="The plan to write: inverse-mu is the paper's; greedy needs --model and data.")
    ] = Strategy.inverse_mu,
    evaluate: Annotated[bool, typer.Option(help="Measure the --strategies under global noise.")] = False,
    strategies: Annotated[
        str | None,
        typer.Option(
            help=f"--evaluate: comma list of uniform, inverse-mu, greedy (default: all three up to {GREEDY_MAX_POINTS} points, "
            "without greedy above: it measures points × (budget − points) plans)."
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="The scanned model (for --evaluate and greedy).")] = None,
    data: DataOption = None,
    labels: LabelsOption = None,
    dataset_name: DatasetOption = None,
    split: SplitOption = None,
    data_dir: DataDirOption = None,
    feed: FeedOption = None,
    metric: Annotated[str | None, typer.Option(help=f"{METRIC_HELP} Default: the report's.")] = None,
    metric_timeout: MetricTimeoutOption = None,
    noise: Annotated[Kind | None, typer.Option(help="Noise for --evaluate (default: the report's).")] = None,
    order: OrderOption = None,
    sigma_ratio: SigmaRatioOption = None,
    sigma: Annotated[
        str, typer.Option(help="Global σ for --evaluate: a number or 'global-mu' (the report's global μ).")
    ] = "global-mu",
    repeats: Annotated[
        int, typer.Option(help="Noise draws per plan (same draws for every plan).", min=1, max=MAX_REPEATS)
    ] = 20,
    seed: Annotated[
        int, typer.Option(help="Seed of the evaluation draws (greedy selects on seed+1).", min=0, max=MAX_SEED - 1)
    ] = 0,
    limit: LimitOption = None,
    limit_mode: LimitModeOption = LimitMode.stratified,
    batch_size: BatchSizeOption = 1024,
    threads: ThreadsOption = 0,
    memory: MemoryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan JSON on stdout.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the plan JSON here.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    granularity: Annotated[
        Granularity | None, typer.Option(help="Points per layer or per op (default: the report's).")
    ] = None,
    digital: Annotated[
        int | None,
        typer.Option(help="A weight-noise report (pcm…): keep the K least robust layers digital (noise-free); with "
                     "--evaluate, the accuracy for every K' ≤ K against keeping the first K' layers.", min=0),
    ] = None,
    at_time: Annotated[
        str | None, typer.Option(help="--digital --evaluate: the level to evaluate at (1y, 1d, 3600; default: the scan's largest).")
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="--digital --evaluate: a one-file HTML page with the accuracy per digital layer.")
    ] = None,
) -> None:
    """Spread a budget of repeated executions over the points, guided by μ (paper Table 3); or, with
    --digital, choose the weight layers of an analog model that stay digital."""
    import numpy as np

    from wn_onnx.engine import Engine, providers_for
    from wn_onnx.metrics import get_metric
    from wn_onnx.noise import NoiseSpec
    from wn_onnx.planner import (
        PlanInput,
        averaged_by_repeats,
        greedy,
        greedy_evaluations,
        inverse_mu,
        load_report,
        parse_budget,
        plan_json,
        uniform,
    )
    from wn_onnx.scanner import clean_pass

    strategy = strategy.value
    if digital is not None:
        from wn_onnx.cli.digital import digital_command

        options = {"data": data, "labels": labels, "dataset_name": dataset_name, "split": split, "data_dir": data_dir,
                   "feed": feed, "limit": limit, "limit_mode": limit_mode}  # fmt: skip
        digital_command(report_path, load_report(report_path), digital, evaluate, at_time, model, options, repeats, seed,
                        batch_size, threads, memory, as_json, out_path, html_path)  # fmt: skip
        return
    report = averaged_by_repeats(load_report(report_path), str(report_path))
    inp = PlanInput.from_report(report)
    n = len(inp.indices)
    total = parse_budget(budget, n)
    measured, skipped = _strategies(strategies, n, total) if evaluate else ([], None)
    run_greedy = strategy == "greedy" or "greedy" in measured
    results: dict = {}
    plans = {"uniform": uniform(n, total), "inverse-mu": inverse_mu(inp.mu, total, inp.robust)}
    greedy_steps = None
    if evaluate or run_greedy:
        if model is None or (data is None and dataset_name is None):
            raise WnError("--evaluate and --strategy greedy need --model and --data FILE.npz or --dataset NAME")
        if report.get("sigma_scale", "absolute") != "absolute":
            raise WnError("--evaluate and greedy take a report with absolute σ (scan --sigma-scale absolute)")
        loaded, points = match_model(report, model, granularity and granularity.value)
        scoring = get_metric(metric or report.get("metric") or "top1", metric_timeout).name
        dataset = load_data(loaded, data, dataset_name, split, data_dir, limit, limit_mode, feeds=feed, labels=labels)
        engine = Engine(loaded, providers_for("cpu"), threads, memory_bytes(memory))  # holds the data: measured after it
        dataset = clean_pass(engine, dataset, scoring, batch_size, False, metric_timeout)[0]
        spec = noise_spec(noise, order, sigma_ratio) if noise else NoiseSpec.from_json(report.get("noise"))
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
        if skipped:
            err.print(f"[yellow]{skipped}[/]", highlight=False)
        searches = greedy_evaluations(n, total) if run_greedy else 0
        if run_greedy and n > GREEDY_MAX_POINTS:
            err.print(
                f"greedy: {searches} plan evaluations of {max(5, repeats // 4)} draws on {len(dataset)} samples",
                highlight=False,
            )
        bar = None if quiet or as_json else progress_bar()
        task = bar.add_task("plans", total=searches + len(measured)) if bar else None

        def accuracy(plan: np.ndarray, s: int = seed, r: int = repeats) -> np.ndarray:
            acc = engine.plan_accuracy(points, spec, level, plan, dataset, r, s, batch_size, scoring, metric_timeout)
            if bar:
                bar.advance(task, 1)
            return acc

        with bar or contextlib.nullcontext():
            if run_greedy:
                plans["greedy"], greedy_steps = greedy(
                    n, total, lambda p: float(accuracy(p, seed + 1, max(5, repeats // 4)).mean())
                )
            for name in measured:
                acc = accuracy(plans[name])
                results[name] = {
                    "executions": [int(k) for k in plans[name]],
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
        guard_outputs([out_path], [report_path, model, data])
        write_json(out_path, payload)
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    table = Table(title=f"{strategy} plan · budget {total}")
    for col in ("#", "tensor", "μ", "executions", "note"):
        table.add_column(col, overflow="fold")
    for p in payload["points"]:
        mu = "—" if p["mu"] is None else f"{p['mu']:.3g}"
        table.add_row(str(p["index"]), Text(shorten(p["tensor"], 32)), mu, str(p["executions"]), p["flag"])
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
    order: OrderOption = None,
) -> None:
    """Write a deployable model: noise nodes that execute point i n_i times, σ as inputs."""
    import onnx_ir as ir

    from wn_onnx.graph_passes import InsertNoisePass
    from wn_onnx.io.model import load_as_written
    from wn_onnx.noise import NoiseSpec

    guard_outputs([out_path], [model, plan_path])
    try:
        plan = json.loads(read_text(plan_path, "plan"))
        tensors = [p["tensor"] for p in plan["points"]]
        indices = [p["index"] for p in plan["points"]]
        counts = plan["executions"]
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:
        raise WnError(f"{plan_path}: not a wn-onnx plan ({type(err).__name__}: {str(err)[:200]})") from None
    if not (all(isinstance(t, str) for t in tensors) and all(type(i) is int for i in indices)):
        raise WnError(f"{plan_path}: not a wn-onnx plan (points need an integer index and a tensor name)")
    if not isinstance(counts, list) or len(counts) != len(tensors):
        raise WnError(f"{plan_path}: 'executions' must list one count per point ({len(tensors)})")
    if not all(type(n) is int and 1 <= n <= MAX_EXECUTIONS for n in counts):
        raise WnError(f"{plan_path}: executions must be whole numbers in [1, {MAX_EXECUTIONS}], got {counts}"[:300])
    report_like = {
        "points": [{"index": i, "tensor": t} for i, t in zip(indices, tensors, strict=True)],
        "granularity": plan.get("granularity", "op"),
    }
    match_model(report_like, model)
    spec = (
        noise_spec(noise, order, 0.5 if noise == Kind.mixed else None) if noise else NoiseSpec.from_json(plan.get("noise"))
    )
    m = load_as_written(model)  # every output and the declared batch, as the user exported them
    InsertNoisePass(tensors, spec, source="drawn", repetitions=counts)(m)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        ir.save(m, out_path)
    except OSError as e:
        raise WnError(f"cannot write {out_path}: {e.strerror or e}") from None
    inputs = ", ".join(v.name for v in m.graph.inputs)
    out.print(Text(f"{out_path}: {len(tensors)} noise points, executions {counts}; inputs: {inputs}"))
