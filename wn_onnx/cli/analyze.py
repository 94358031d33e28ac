"""``wn-onnx analyze``: the analyses behind the paper's insight (binarisation, mixed-noise maps, weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from wn_onnx.cli.common import (
    BatchSizeOption,
    DataDirOption,
    DataOption,
    DatasetOption,
    FeedOption,
    Granularity,
    GranularityOption,
    Kind,
    LabelsOption,
    LimitMode,
    LimitModeOption,
    LimitOption,
    MemoryOption,
    MetricOption,
    MetricTimeoutOption,
    OnOption,
    PngOption,
    SplitOption,
    Target,
    ThreadsOption,
    load_data,
    memory_bytes,
    out,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json

analyze_app = typer.Typer(help="Self-binarisation, mixed-noise maps, weight magnitudes.", no_args_is_help=True)


def _engine_and_data(model: Path, data: Path | None, dataset_name: str | None, split: str | None,
                     data_dir: Path | None, limit: int | None, limit_mode: LimitMode, threads: int,
                     feed: list[str] | None, metric: str, metric_timeout: float, batch_size: int,
                     labels: Path | None, memory: str | None):  # fmt: skip
    """The model's engine and its data, from --data or --dataset as for scan (labels checked
    against the clean outputs as ``metric`` scores them)."""
    from wn_onnx.engine import Engine, providers_for
    from wn_onnx.io.model import load_model
    from wn_onnx.metrics import get_metric
    from wn_onnx.scanner import clean_pass

    get_metric(metric, metric_timeout)
    loaded = load_model(model)
    dataset = load_data(loaded, data, dataset_name, split, data_dir, limit, limit_mode, feeds=feed, labels=labels)
    engine = Engine(loaded, providers_for("cpu"), threads, memory_bytes(memory))  # holds the data: measured after it
    return engine, clean_pass(engine, dataset, metric, batch_size, False, metric_timeout)[0]


@analyze_app.command("binarize")
def binarize_command(
    model: Annotated[Path, typer.Argument(help="ONNX model.")],
    at: Annotated[int, typer.Option(help="The noisy point.", min=0)],
    data: DataOption = None,
    dataset_name: DatasetOption = None,
    split: SplitOption = None,
    data_dir: DataDirOption = None,
    noise: Annotated[Kind, typer.Option(help="add or mul.")] = Kind.mul,
    sigma: Annotated[float, typer.Option(help="Noise strength at the point.")] = 1e4,
    quantize_at: Annotated[
        int | None, typer.Option(help="Point whose activation is replaced by levels (default: the next).")
    ] = None,
    follow: Annotated[int, typer.Option(help="How many points after the noisy one get histograms.", min=0)] = 3,
    seed: Annotated[int, typer.Option(help="Noise seed.", min=0, max=MAX_SEED)] = 0,
    feed: FeedOption = None,
    metric: MetricOption = "top1",
    metric_timeout: MetricTimeoutOption = None,
    batch_size: BatchSizeOption = 1024,
    limit: LimitOption = None,
    limit_mode: LimitModeOption = LimitMode.stratified,
    threads: ThreadsOption = 0,
    labels: LabelsOption = None,
    memory: MemoryOption = None,
    png: PngOption = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="JSON result.")] = None,
    granularity: GranularityOption = Granularity.layer,
) -> None:
    """Self-binarisation (Fig 4): histograms with/without noise and the two/three-level threshold test."""
    from wn_onnx.analysis import binarize
    from wn_onnx.noise import NoiseSpec

    if noise == Kind.mixed:
        raise WnError("analyze binarize takes --noise add or mul")
    guard_outputs([out_path], [model, data])
    engine, dataset = _engine_and_data(model, data, dataset_name, split, data_dir, limit, limit_mode, threads, feed,
                                       metric, metric_timeout, batch_size, labels, memory)  # fmt: skip
    result = binarize(engine, dataset, at, NoiseSpec(noise.value), sigma, seed, follow, quantize_at, granularity.value,
                      metric, batch_size, metric_timeout)  # fmt: skip
    acc = result["accuracy"]
    table = Table(
        title=f"{noise.value} noise σ={sigma:g} at point {at} · {result['levels']['count']} levels at point {result['quantized_point']['index']}"
    )
    for col in ("clean", "clean + levels", "noisy", "noisy + levels"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{acc['clean']:.2%}", f"{acc['clean_quantized']:.2%}", f"{acc['noisy']:.2%}", f"{acc['quantized']:.2%}"
    )
    out.print(table)
    out.print(f"levels {result['levels']['values']} · cuts {result['levels']['cuts']}")
    if png:
        from wn_onnx.results.figures import binarize_figure, save

        out.print("figures: " + ", ".join(map(str, save(binarize_figure(result), png / "binarize"))), markup=False)
    if out_path:
        write_json(out_path, result)


@analyze_app.command("mixed")
def mixed_command(
    model: Annotated[Path, typer.Argument(help="ONNX model.")],
    at: Annotated[int, typer.Option(help="The noisy point.", min=0)],
    data: DataOption = None,
    dataset_name: DatasetOption = None,
    split: SplitOption = None,
    data_dir: DataDirOption = None,
    order: Annotated[str, typer.Option(help="mul-first, add-first or both.")] = "both",
    sigma_mul: Annotated[str, typer.Option(help="σ_mul grid (log:a:b:n, lin:a:b:n or a list).")] = "log:1e-2:1e4:13",
    sigma_add: Annotated[str, typer.Option(help="σ_add grid.")] = "log:1e-2:1e4:13",
    repeats: Annotated[int, typer.Option(help="Noise draws per cell.", min=1, max=MAX_REPEATS)] = 3,
    seed: Annotated[int, typer.Option(help="Noise seed.", min=0, max=MAX_SEED)] = 0,
    feed: FeedOption = None,
    metric: MetricOption = "top1",
    metric_timeout: MetricTimeoutOption = None,
    batch_size: BatchSizeOption = 1024,
    limit: LimitOption = None,
    limit_mode: LimitModeOption = LimitMode.stratified,
    threads: ThreadsOption = 0,
    labels: LabelsOption = None,
    memory: MemoryOption = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="HTML page with the heatmaps.")] = None,
    png: PngOption = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="JSON of the grid(s).")] = None,
    granularity: GranularityOption = Granularity.layer,
    on: OnOption = Target.activations,
) -> None:
    """Mixed noise map (Fig 6): accuracy over (σ_mul, σ_add) for each order, at an activation or weight point."""
    from wn_onnx.analysis import mixed_grid
    from wn_onnx.noise import parse_grid
    from wn_onnx.results.figures import html_page, mixed_figure, save

    orders = ["mul-first", "add-first"] if order == "both" else [order]
    if any(o not in ("mul-first", "add-first") for o in orders):
        raise WnError(f"--order must be mul-first, add-first or both, not {order!r}")
    guard_outputs([out_path, html_path], [model, data])
    engine, dataset = _engine_and_data(model, data, dataset_name, split, data_dir, limit, limit_mode, threads, feed,
                                       metric, metric_timeout, batch_size, labels, memory)  # fmt: skip
    grids = [
        mixed_grid(engine, dataset, at, o, parse_grid(sigma_mul), parse_grid(sigma_add), repeats, seed,
                   granularity.value, metric, batch_size, metric_timeout, on.value)
        for o in orders
    ]
    fig = mixed_figure(grids)
    if png:
        out.print("figures: " + ", ".join(map(str, save(fig, png / "mixed"))), markup=False)
    if html_path:
        html_path.write_text(html_page(f"mixed noise at point {at}", [("accuracy over (σ_mul, σ_add)", fig)]))
        out.print(f"wrote {html_path}", markup=False)
    if out_path:
        write_json(out_path, {"grids": grids})
    for g in grids:
        best = max(max(row) for row in g["accuracy"])
        out.print(
            f"{g['order']}: accuracy {min(min(r) for r in g['accuracy']):.1%} … {best:.1%} over {len(g['sigma_mul'])}×{len(g['sigma_add'])} cells"
        )


@analyze_app.command("weights")
def weights_command(
    a: Annotated[Path, typer.Argument(help="ONNX model.")],
    b: Annotated[Path | None, typer.Argument(help="A second model: ratio b/a per layer (Table 2).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Mean |w| per learnable layer, and the ratio between two models."""
    from wn_onnx.analysis import weight_magnitudes, weight_ratio

    rows = weight_magnitudes(str(a))
    if b is not None:
        rows = weight_ratio(rows, weight_magnitudes(str(b)))
    if as_json:
        print(json.dumps({"layers": rows}, indent=2))
        return
    from wn_onnx.cli.render import weights_table

    title = "mean |w| per learnable layer" + (f" · ratio {b.name}/{a.name}" if b else "")
    out.print(weights_table(rows, title, out.width))
