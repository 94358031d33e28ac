"""``wn-onnx points`` and ``wn-onnx scan``: the noise points of a model, and the walking / global scan."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from wn_onnx.cli.common import (
    MAX_THREADS,
    AdcBitsOption,
    AtOption,
    BatchSizeOption,
    CompensationOption,
    DacBitsOption,
    DataDirOption,
    DataOption,
    DatasetOption,
    Device,
    DeviceOption,
    DriftScaleOption,
    Estimator,
    FeedOption,
    FormatOption,
    GMaxOption,
    Granularity,
    GranularityOption,
    LabelsOption,
    LevelsOption,
    LimitMode,
    LimitModeOption,
    LimitOption,
    MemoryOption,
    MetricOption,
    MetricTimeoutOption,
    Mode,
    NoiseOption,
    OnOption,
    OrderOption,
    OutNoiseOption,
    OutputOption,
    PercentileOption,
    PerTensorOption,
    ProgScaleOption,
    ReadNoiseOption,
    ReadScaleOption,
    SigmaAddOption,
    SigmaMulOption,
    SigmaRatioOption,
    SigmaScale,
    SplitOption,
    Target,
    ThreadsOption,
    WeightScaleOption,
    converters,
    err,
    load_data,
    memory_bytes,
    noise_model,
    out,
    progress_bar,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json

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
    from wn_onnx.graph_passes import select_points
    from wn_onnx.graph_passes.weights import points_on
    from wn_onnx.io.model import load_model

    loaded = load_model(model, output)
    found = points_on(loaded.model, on.value, granularity.value, str(model))
    from wn_onnx.graph_passes.points import batch_values

    chosen = [p.to_json() for p in select_points(found, at)]
    others = batch_values(loaded.model) if every and on == Target.activations else []
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


def scan_command(
    model: Annotated[
        Path | None, typer.Argument(help="ONNX model; omitted: the embedded digits MLP and its test split.")
    ] = None,
    data: DataOption = None,
    labels: LabelsOption = None,
    dataset_name: DatasetOption = None,
    split: SplitOption = None,
    data_dir: DataDirOption = None,
    feed: FeedOption = None,
    metric: MetricOption = "top1",
    metric_timeout: MetricTimeoutOption = None,
    noise: NoiseOption = "add",
    on: OnOption = Target.activations,
    order: OrderOption = None,
    sigma_ratio: SigmaRatioOption = None,
    sigma_mul: SigmaMulOption = None,
    sigma_add: SigmaAddOption = None,
    weight_scale: WeightScaleOption = None,
    per_tensor: PerTensorOption = False,
    percentile: PercentileOption = None,
    fmt: FormatOption = None,
    g_max: GMaxOption = None,
    prog_scale: ProgScaleOption = None,
    drift_scale: DriftScaleOption = None,
    read_scale: ReadScaleOption = None,
    compensation: CompensationOption = None,
    read_noise: ReadNoiseOption = None,
    dac_bits: DacBitsOption = None,
    adc_bits: AdcBitsOption = None,
    out_noise: OutNoiseOption = None,
    sigmas: LevelsOption = None,
    mode: Annotated[
        Mode, typer.Option(help="walking: one point at a time · global: all selected points · both.")
    ] = Mode.both,
    at: AtOption = None,
    repeats: Annotated[
        int | None, typer.Option(help="Independent noise draws per σ (default 5; 10 on weights).", min=1, max=MAX_REPEATS)
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every noise draw: same inputs + seed → identical report.", min=0, max=MAX_SEED)
    ] = 0,
    limit: LimitOption = None,
    limit_mode: LimitModeOption = LimitMode.stratified,
    batch_size: BatchSizeOption = 1024,
    redraw: Annotated[bool, typer.Option(help="Fresh noise for every σ instead of one draw reused across σ.")] = False,
    global_skip_bn: Annotated[
        bool, typer.Option(help="Global sweep: no noise after BatchNormalization (the paper's Table 1 setting).")
    ] = False,
    label_free: Annotated[
        bool, typer.Option(help="Score agreement with the clean model's predictions instead of labels.")
    ] = False,
    adaptive: Annotated[
        bool, typer.Option(help="Measure a coarse part of the grid, then refine around each drop until μ is precise.")
    ] = False,
    tolerance: Annotated[
        float, typer.Option(help="--adaptive and --estimator sequential stop once μ_err ≤ tolerance·μ.")
    ] = 0.05,
    estimator: Annotated[
        Estimator,
        typer.Option(help="grid: every σ on every sample · sequential: few samples at the σ that tell most about μ."),
    ] = Estimator.grid,
    jobs: Annotated[int, typer.Option(help="Walk points in this many processes.", min=1, max=MAX_THREADS)] = 1,
    memory: MemoryOption = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Walk points (and global σ chunks) on a local Dask cluster of N worker processes.", min=0, max=MAX_THREADS
        ),
    ] = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="… or on the Dask cluster of this scheduler (tcp://host:8786).")
    ] = None,
    device: DeviceOption = Device.cpu,
    threads: ThreadsOption = 0,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the report JSON here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report JSON on stdout instead of the table.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Take curves finished by an earlier run with the same --out and settings.")
    ] = False,
    output: OutputOption = None,
    granularity: GranularityOption = Granularity.layer,
    sigma_scale: Annotated[
        SigmaScale,
        typer.Option(help="absolute: σ as given (the paper's) · std: σ in units of each point's clean activation std."),
    ] = SigmaScale.absolute,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Sweep noise strength at every point (walking) and everywhere at once (global); fit μ per point."""
    from wn_onnx.cli.render import report_table
    from wn_onnx.engine import SweepSettings
    from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
    from wn_onnx.io.model import load_model
    from wn_onnx.metrics import get_metric
    from wn_onnx.results.report import clean_nonfinite
    from wn_onnx.scanner import ScanRequest, run_scan

    if model is None:
        if data is not None or dataset_name is not None:
            raise WnError("--data/--dataset without a MODEL: give the ONNX model to scan (the embedded default runs on its own digits)")
        model, data = DEFAULT_MODEL, DEFAULT_DATA
    spec = noise_model(noise, order=order, ratio=sigma_ratio, sigma_mul=sigma_mul, sigma_add=sigma_add,
                       weight_scale=weight_scale, per_tensor=per_tensor, percentile=percentile, format=fmt, g_max=g_max,
                       prog_scale=prog_scale, drift_scale=drift_scale, read_scale=read_scale, compensation=compensation,
                       read_noise=read_noise)  # fmt: skip
    grid = spec.levels(sigmas)
    loaded = load_model(model, output)
    dataset = load_data(loaded, data, dataset_name, split, data_dir, limit, limit_mode, not label_free, feed, labels)
    from wn_onnx.noise import default_repeats

    repeats = default_repeats(on.value) if repeats is None else repeats
    settings = SweepSettings(grid, spec, repeats, seed, batch_size, redraw, metric=get_metric(metric, metric_timeout).name,
                             metric_timeout=metric_timeout, converters=converters(dac_bits, adc_bits, out_noise))
    if loaded.freed_batch:
        err.print(
            f"[dim]{escape(str(model))}: the input declares a batch of {loaded.freed_batch}, but the graph gives the same outputs for "
            "any batch (checked), so it runs in batches of --batch-size[/]"
        )
    elif loaded.fixed_batch and loaded.fixed_batch != batch_size:
        err.print(
            f"[yellow]{escape(str(model))}: the graph has its batch of {loaded.fixed_batch} built in; evaluating {loaded.fixed_batch} "
            "samples per run (slow for small batches: export with a dynamic batch axis to go faster)[/]"
        )
    request = ScanRequest(
        mode.value, at, label_free, device.value, threads, not global_skip_bn, adaptive, tolerance, jobs,
        granularity.value, sigma_scale.value, estimator.value, memory_bytes(memory), workers, scheduler, on.value,
    )  # fmt: skip
    from wn_onnx.scanner import check_target

    check_target(request, settings, loaded)  # before the progress bar: a refusal is its one line
    if resume and out_path is None:
        raise WnError("--resume needs --out: finished curves are kept in OUT.sqlite")
    if out_path:
        guard_outputs([out_path, out_path.with_name(out_path.name + ".sqlite")], [model, data, labels, *loaded.external])
    from wn_onnx.results.store import CurveStore
    from wn_onnx.scanner import ScanInterrupted

    store = CurveStore(out_path.with_name(out_path.name + ".sqlite")) if out_path else None
    bar, factory = _progress(not quiet and not as_json)
    start = time.perf_counter()
    try:
        if bar:
            with bar:
                report = run_scan(loaded, dataset, settings, request, factory, store, resume)
        else:
            report = run_scan(loaded, dataset, settings, request, None, store, resume)
    except ScanInterrupted as stop:
        if out_path:
            write_json(out_path, stop.report)
            err.print(
                f"interrupted: partial report ({len(stop.report['points'])} points) written to {escape(str(out_path))}; "
                "rerun with --resume to finish"
            )
        else:
            err.print("interrupted (no --out: nothing saved)")
        sys.exit(130)
    finally:
        if store is not None:
            store.close()
    report["seconds"] = round(time.perf_counter() - start, 3)
    if out_path:
        write_json(out_path, {k: v for k, v in report.items() if k != "seconds"})
    if as_json:
        print(json.dumps(report, indent=2))
        return
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
    out.print(f"[dim]{report['seconds']:.1f} s{f' · report written to {escape(str(out_path))}' if out_path else ''}[/]")
