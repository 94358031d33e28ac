"""``wn-onnx plan`` and ``wn-onnx apply-plan``: guided multi-execution from a scan report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from wn_onnx import api
from wn_onnx.cli.common import Granularity, Kind, OrderOption, SigmaRatioOption, Strategy, err, out, progress_bar
from wn_onnx.cli.options import DataArgs, grouped
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json
from wn_onnx.results.names import shorten

MEASURED = ("uniform", "inverse-mu")  # what --evaluate measures unless --strategies says: greedy is asked for


@grouped
def plan_command(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="A scan report JSON (walking points with μ).")],
    budget: Annotated[str | None, typer.Option(help="Total executions (default: 2 × number of points).")] = None,
    strategy: Annotated[
        Strategy, typer.Option(help="The plan to write: inverse-mu is the paper's; greedy needs --model and data.")
    ] = Strategy.inverse_mu,
    evaluate: Annotated[bool, typer.Option(help="Measure the --strategies under global noise.")] = False,
    strategies: Annotated[
        str | None,
        typer.Option(help="--evaluate: comma list of uniform, inverse-mu, greedy (default: uniform,inverse-mu; greedy "
                     "measures 1 + points × (budget − points) plans)."),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="The scanned model (for --evaluate and greedy).")] = None,
    data: DataArgs = None,
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
    source = data.source() if data.data is not None or data.dataset is not None else None
    guard_outputs([out_path, html_path], [report_path, model, data.data, data.labels])  # before any work
    if digital is not None:
        from wn_onnx.cli.digital import digital_command

        digital_command(report_path, digital, evaluate, at_time, model, data, repeats, seed, as_json, out_path, html_path)
        return
    measured = _strategies(strategies) if evaluate else []
    if (measured or strategy == Strategy.greedy) and (model is None or source is None):
        raise WnError("--evaluate and --strategy greedy need --model and --data FILE.npz or --dataset NAME")
    spec = api.make_noise(noise.value, order=order and order.value, ratio=sigma_ratio) if noise else None
    loaded = None if model is None else api.load_model(model)
    dataset = None if source is None or loaded is None else data.read(loaded)
    measuring = bool(measured) or strategy == Strategy.greedy
    plans = len(measured)
    if measuring and (strategy == Strategy.greedy or "greedy" in measured):
        n = len(api.read_report(report_path, walked=True)["points"])
        searches = api.greedy_evaluations(n, api.parse_budget(budget, n))
        plans += searches
        err.print(f"greedy: {searches} plan evaluations of {max(5, repeats // 4)} draws on {len(dataset)} samples",
                  highlight=False)  # fmt: skip
    with _PlanBar(measuring and not (quiet or as_json), plans) as tick:
        plan = api.plan(report_path, budget, strategy.value, evaluate=measured, model=model, data=dataset, noise=spec,
                        sigma=sigma, repeats=repeats, seed=seed, granularity=None if granularity is None else granularity.value, tick=tick,
                        **{k: v for k, v in data.scan_settings().items() if k not in ("limit", "limit_mode", "feeds")})  # fmt: skip
    payload = plan.to_json()
    if out_path:
        write_json(out_path, payload)
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    render_plan(payload)


class _PlanBar:
    """A progress bar of measured plans that appears with the first one (an error before it stays
    one line); the context gives the ``tick()`` the API calls."""

    def __init__(self, shown: bool, total: int) -> None:
        self.bar, self.task, self.total = (progress_bar() if shown else None), None, total

    def tick(self) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("plans", total=self.total)
        self.bar.advance(self.task, 1)

    def __enter__(self):
        return self.tick

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()


def _strategies(text: str | None) -> list[str]:
    """The strategies ``--evaluate`` measures."""
    if text is None:
        return list(MEASURED)
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names or any(n not in api.STRATEGIES for n in names):
        raise WnError(f"--strategies {text!r}: choose from {', '.join(api.STRATEGIES)} (comma-separated)")
    return names


def render_plan(payload: dict) -> None:
    """The plan's table and, when measured, the accuracy of each strategy."""
    table = Table(title=f"{payload['strategy']} plan · budget {payload['budget']}")
    for col in ("#", "tensor", "μ", "executions", "note"):
        table.add_column(col, overflow="fold")
    for p in payload["points"]:
        mu = "—" if p["mu"] is None else f"{p['mu']:.3g}"
        table.add_row(str(p["index"]), Text(shorten(p["tensor"], 32)), mu, str(p["executions"]), p["flag"])
    out.print(table)
    ev = payload.get("evaluation")
    if ev:
        t2 = Table(title=f"accuracy at global σ = {ev['sigma']:.3g} ({ev['repeats']} draws, the same for every plan)")
        for col in ("plan", "executions", "accuracy"):
            t2.add_column(col)
        for name, r in ev["plans"].items():
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
    spec = api.make_noise(noise.value, order=order and order.value, ratio=0.5 if noise == Kind.mixed else None) if noise else None
    inputs = api.apply_plan(model, plan_path, out_path, spec)
    plan = json.loads(plan_path.read_text())
    out.print(Text(f"{out_path}: {len(plan['points'])} noise points, executions {plan['executions']}; inputs: {', '.join(inputs)}"))

