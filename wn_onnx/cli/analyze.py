"""``wn-onnx analyze``: the analyses behind the paper's insight (binarisation, mixed-noise maps, weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from wn_onnx import api
from wn_onnx.cli.common import Granularity, Kind, OnOption, PngOption, Target, out
from wn_onnx.cli.options import DataArgs, grouped
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json

analyze_app = typer.Typer(help="Self-binarisation, mixed-noise maps, weight magnitudes.", no_args_is_help=True)
GranularityLayer = Annotated[Granularity, typer.Option(help="Points per layer (default) or per op.")]


def _data(model: Path, data: DataArgs):
    """The model and its data, read as every command reads them."""
    loaded = api.load_model(model)
    return loaded, data.read(loaded)


@analyze_app.command("binarize")
@grouped
def binarize_command(
    model: Annotated[Path, typer.Argument(help="ONNX model.")],
    at: Annotated[int, typer.Option(help="The noisy point.", min=0)],
    data: DataArgs = None,
    noise: Annotated[Kind, typer.Option(help="add or mul.")] = Kind.mul,
    sigma: Annotated[float, typer.Option(help="Noise strength at the point.")] = 1e4,
    quantize_at: Annotated[
        int | None, typer.Option(help="Point whose activation is replaced by levels (default: the next).")
    ] = None,
    follow: Annotated[int, typer.Option(help="How many points after the noisy one get histograms.", min=0)] = 3,
    seed: Annotated[int, typer.Option(help="Noise seed.", min=0, max=MAX_SEED)] = 0,
    png: PngOption = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="JSON result.")] = None,
    granularity: GranularityLayer = Granularity.layer,
) -> None:
    """Self-binarisation (Fig 4): histograms with/without noise and the two/three-level threshold test."""
    if noise == Kind.mixed:
        raise WnError("analyze binarize takes --noise add or mul")
    guard_outputs([out_path], [model, data.data, data.labels])
    loaded, dataset = _data(model, data)
    result = api.binarize(loaded, dataset, at=at, sigma=sigma, quantize_at=quantize_at, follow=follow, noise=noise.value,
                          seed=seed, granularity=granularity.value, **data.scan_settings())  # fmt: skip
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
@grouped
def mixed_command(
    model: Annotated[Path, typer.Argument(help="ONNX model.")],
    at: Annotated[int, typer.Option(help="The noisy point.", min=0)],
    data: DataArgs = None,
    order: Annotated[str, typer.Option(help="mul-first, add-first or both.")] = "both",
    sigma_mul_grid: Annotated[
        str, typer.Option(help="σ_mul grid (log:A:B:N, lin:A:B:N or a list).")
    ] = "log:1e-2:1e4:13",
    sigma_add_grid: Annotated[str, typer.Option(help="σ_add grid.")] = "log:1e-2:1e4:13",
    repeats: Annotated[int, typer.Option(help="Noise draws per cell.", min=1, max=MAX_REPEATS)] = 3,
    seed: Annotated[int, typer.Option(help="Noise seed.", min=0, max=MAX_SEED)] = 0,
    html_path: Annotated[Path | None, typer.Option("--html", help="HTML page with the heatmaps.")] = None,
    png: PngOption = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="JSON of the grid(s).")] = None,
    granularity: GranularityLayer = Granularity.layer,
    on: OnOption = Target.activations,
) -> None:
    """Mixed noise map (Fig 6): accuracy over (σ_mul, σ_add) for each order, at an activation or weight point."""
    from wn_onnx.results.figures import html_page, mixed_figure, save

    orders = ["mul-first", "add-first"] if order == "both" else [order]
    guard_outputs([out_path, html_path], [model, data.data, data.labels])
    loaded, dataset = _data(model, data)
    grids = api.mixed(loaded, dataset, at=at, orders=orders, sigma_mul=sigma_mul_grid, sigma_add=sigma_add_grid,
                      repeats=repeats, seed=seed, granularity=granularity.value, on=on.value,
                      **data.scan_settings())  # fmt: skip
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
    rows = api.weight_magnitudes(a, b)
    if as_json:
        print(json.dumps({"layers": rows}, indent=2))
        return
    from wn_onnx.cli.render import weights_table

    title = "mean |w| per learnable layer" + (f" · ratio {b.name}/{a.name}" if b else "")
    out.print(weights_table(rows, title, out.width))
