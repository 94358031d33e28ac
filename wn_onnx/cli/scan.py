"""``wn-onnx points`` and ``wn-onnx scan``: the noise points of a model, and the walking / global scan."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from wn_onnx import api
from wn_onnx.cli.common import (
    Granularity,
    GranularityOption,
    OnOption,
    OutputOption,
    Target,
    err,
    out,
    progress_bar,
)
from wn_onnx.cli.options import DataArgs, ModelArgument, NoiseArgs, ScanArgs, grouped
from wn_onnx.cli.render import report_table
from wn_onnx.errors import WnError
from wn_onnx.results.report import clean_nonfinite

STRENGTH = re.compile(r"(σ = |[<>≤≥] |and )(\d+(?:\.\d+)?(?:e[+-]?\d+)?)")


def axis_note(note: str, report: dict) -> str:
    """A fit note (written on the strength σ) in the report's axis: σ named as the axis, a time's
    strengths in its units (μ > 10 y)."""
    axis = report.get("axis")
    if not axis:
        return note
    if axis.get("unit") == "s":
        from wn_onnx.results.names import level_text

        note = STRENGTH.sub(lambda m: m.group(1) + level_text(report, float(m.group(2))), note)
    return note.replace("fewer than 3 σ", "fewer than 3 levels").replace("σ", str(axis["name"]))


def _progress(enabled: bool):
    """A progress bar and a ``progress(description, total) -> tick`` factory, or (None, None)."""
    if not enabled:
        return None, None
    bar = progress_bar()

    def factory(description: str, total: int):
        task = bar.add_task(description, total=total)
        done = [0.0]

        def tick(n: float) -> None:  # fractions of a point add up to 4.999…: rounded, the bar ends at 5/5
            done[0] += n
            bar.update(task, completed=round(done[0], 6))

        return tick

    return bar, factory


def points_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    at: Annotated[str | None, typer.Option(help="Show only a selection: 0,3,5-8 · op:Conv,Gemm · re:PATTERN.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"points": [...]} as JSON.')] = False,
    output: OutputOption = None,
    granularity: GranularityOption = Granularity.layer,
    on: OnOption = Target.activations,
    every: Annotated[
        bool, typer.Option("--all", help="Also list the float values that hold no sample's values (no points).")
    ] = False,
) -> None:
    """List the noise points of MODEL: index, tensor, producing op (the layer, for weights), shape (and the ops a layer point stands for)."""
    loaded = api.load_model(model, output)
    chosen = [p.to_json() for p in api.find_points(loaded, at, granularity.value, on.value)]
    others = api.not_points(loaded) if every and on == Target.activations else []
    if as_json:
        head = {"model": str(model), "granularity": granularity.value} if on == Target.activations else {"model": str(model), "on": on.value}
        print(json.dumps({**head, "points": chosen, **({"not_points": others} if every else {})}, indent=2))
        return
    out.print(Text(f"{'weight' if on == Target.weights else 'noise'} points of {model}"), soft_wrap=True)  # a long path on one line, not folded in the table
    out.print(__import__("wn_onnx.cli.render", fromlist=["points_table"]).points_table(chosen, None, out.width))
    for p in chosen:
        where = f" in {p['path']}" if p.get("path") else ""
        ops = f" = {' → '.join(p['ops'])}" if p.get("ops") else ""
        skip = f" · not walkable: {p['unsupported']}" if p.get("unsupported") else ""
        if where or ops or skip:
            out.print(Text(f"point {p['index']}: {p['op_type']}{ops}{where}{skip}"), soft_wrap=True)
    for v in others:
        shape = "×".join("?" if d is None else str(d) for d in v["shape"]) if v["shape"] is not None else "?"
        out.print(Text(f"not a point (no sample's values): {v['tensor']} ({v['op_type']}, {shape or 'scalar'})"), soft_wrap=True)


@grouped
def scan_command(
    model: ModelArgument = None,
    data: DataArgs = None,
    noise: NoiseArgs = None,
    how: ScanArgs = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the report JSON here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report JSON on stdout instead of the table.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Take curves finished by an earlier run with the same --out and settings.")
    ] = False,
    output: OutputOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Sweep noise strength at every point (walking) and everywhere at once (global); fit μ per point."""
    if model is None:
        if data.data is not None or data.dataset is not None:
            raise WnError("--data/--dataset without a MODEL: give the ONNX model to scan (the embedded default runs on its own digits)")
        model, data.data = api.DEFAULT_MODEL, api.DEFAULT_DATA
    config = api.scan_config(**noise.scan_settings(), **data.scan_settings(), **how.scan_settings())
    loaded = api.load_model(model, output)
    batch_note(loaded, str(model), config.batch_size)
    dataset = data.read(loaded, config)
    bar, factory = _progress(not quiet and not as_json)
    start = time.perf_counter()
    try:
        with bar or contextlib.nullcontext():
            report = api.scan(loaded, dataset, config, out=out_path, resume=resume, progress=factory,
                              inputs=[model, data.data, data.labels]).to_json()  # fmt: skip
    except api.ScanInterrupted as stop:
        if out_path:
            err.print(f"interrupted: partial report ({len(stop.report['points'])} points) written to "
                      f"{escape(str(out_path))}; rerun with --resume to finish")  # fmt: skip
        else:
            err.print("interrupted (no --out: nothing saved)")
        sys.exit(130)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    render_scan(report, time.perf_counter() - start, out_path)


def batch_note(loaded, name: str, batch_size: int) -> None:
    """Say how a model with a batch size in its graph is run."""
    if loaded.freed_batch:
        err.print(
            f"[dim]{escape(name)}: the input declares a batch of {loaded.freed_batch}, but the graph gives the same outputs for "
            "any batch (checked), so it runs in batches of --batch-size[/]"
        )
    elif loaded.fixed_batch and loaded.fixed_batch != batch_size:
        err.print(
            f"[yellow]{escape(name)}: the graph has its batch of {loaded.fixed_batch} built in; evaluating {loaded.fixed_batch} "
            "samples per run (slow for small batches: export with a dynamic batch axis to go faster)[/]"
        )


def render_scan(report: dict, seconds: float, out_path: Path | None) -> None:
    """The scan's table and the lines under it: fit notes, failed / skipped / not-run points, warnings."""
    out.print(report_table(report, out.width))
    notes = [
        (p.get("index", "global"), p["fit"]["note"])
        for p in [*report["points"], *([report["global"]] if report["global"] else [])]
        if p["fit"].get("note") and p["status"] != "failed"
    ]
    falling = (report.get("axis") or {}).get("more") == "down"
    if falling:  # the fit's notes are on the strength 2^-bits: the table's bounds say it in bits
        notes = []
        out.print("[dim]μ < B: accuracy never fell halfway, down to B bits (the fewest measured); "
                  "≥ B: already below halfway at B bits; A…B: the drop lies between those widths[/]")  # fmt: skip
    for where, note in notes:
        out.print(f"[dim]point {where}: {escape(axis_note(note, report))}[/]")
    for p in report["points"]:
        if p["status"] == "failed":
            out.print(f"[bold red]point {p['index']} ({escape(str(p['tensor']))}) failed: {escape(str(p['reason']))}[/]")
    unrun = report.get("not_run", [])
    if unrun:
        where = sorted({p["path"] for p in unrun})
        out.print(f"[yellow]not-run: {len(unrun)} point{'s' if len(unrun) > 1 else ''} in If branches these data never take "
                  f"({escape(', '.join(where))}): {', '.join(str(p['index']) for p in unrun)}; no μ, left out of the "
                  "global sweep[/]")  # fmt: skip
    for p in report.get("skipped", []):
        out.print(f"[yellow]point {p['index']} ({escape(str(p['tensor']))}) skipped: {escape(p['reason'])}[/]")
    mixing = [str(p["index"]) for p in report["points"] if p.get("mixes_samples")]
    if mixing:
        out.print(
            f"[yellow]points {', '.join(mixing)}: the graph after them mixes the samples of a batch (dynamic "
            "quantization, batch statistics); each σ ran on its own, and results depend on the samples per run (--batch-size, --memory).[/]"
        )
    fewest = [(p.get("index", "global"), p["fewest_bits"]) for p in [*report["points"], report["global"]]
              if p and p.get("fewest_bits") is not None]  # fmt: skip
    if fewest:
        within = ", ".join(f"{where}: {bits}" for where, bits in fewest)
        out.print(f"[dim]fewest bits within 1 % of the clean accuracy: {within}[/]")
    if report.get("deterministic"):
        out.print("[dim]deterministic noise model: one repeat says everything (repeats set to 1)[/]")
    used = [c["sequential"] for c in [*report["points"], report["global"]] if c and "sequential" in c]
    if used:
        done, grid = sum(u["evaluations"] for u in used), sum(u["grid_evaluations"] for u in used)
        out.print(f"[dim]sequential: {done} sample evaluations, {done / grid:.1%} of the full grid's {grid}[/]")
    if clean_nonfinite(report):
        out.print(f"[yellow]{escape(clean_nonfinite(report))}[/]")
    bad = sum(sum(map(sum, p["nonfinite"])) for p in report["points"])
    if bad:
        out.print(
            f"[yellow]{bad} noisy predictions had NaN/Inf outputs; they count as wrong (see 'nonfinite' in the JSON).[/]"
        )
    out.print(f"[dim]{seconds:.1f} s{f' · report written to {escape(str(out_path))}' if out_path else ''}[/]")
