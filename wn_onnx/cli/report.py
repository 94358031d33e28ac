"""``wn-onnx report``: figures and a self-contained HTML page from one or more scan reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from wn_onnx import api
from wn_onnx.cli.common import PngOption, err, out
from wn_onnx.errors import WnError
from wn_onnx.io.safeio import guard_outputs


def report_command(
    reports: Annotated[list[Path], typer.Argument(help="One or more scan reports (overlaid when several).")],
    html_path: Annotated[Path | None, typer.Option("--html", help="One self-contained HTML file.")] = None,
    png: PngOption = None,
    label: Annotated[list[str] | None, typer.Option(help="Legend label per report (repeat the option).")] = None,
    curves: Annotated[
        int, typer.Option(min=0, help="Accuracy-vs-σ panels per report: the points with the lowest μ (0: every point).")
    ] = 48,
) -> None:
    """Figures of scan reports: accuracy vs σ with fits (Fig 1), μ per point (Fig 2), accuracy preserved (Fig 3/5)."""
    from wn_onnx.results.figures import build_report

    if html_path is None and png is None:
        raise WnError("say where to write: --html FILE and/or --png FOLDER")
    guard_outputs([html_path, png], reports)
    data = [api.read_report(p) for p in reports]
    if label and len(label) != len(data):
        raise WnError(f"{len(label)} --label for {len(data)} reports")
    try:
        written, notes = build_report(data, label or [p.stem for p in reports], html_path, png, curves)
    except ValueError as e:  # numpy's LinAlgError ("Singular matrix") too: say which reports
        raise WnError(f"{', '.join(map(str, reports))}: {e}") from None
    for note in notes:
        err.print(f"[yellow]warning:[/] {escape(note)}")
    out.print(f"wrote {len(written)} files: " + ", ".join(escape(str(p)) for p in written))
