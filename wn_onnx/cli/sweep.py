"""``wn-onnx sweep``: noisy-training sweeps on Dask distributed (plan, run, status, report)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from wn_onnx import api
from wn_onnx.cli.common import MAX_THREADS, MemoryOption, err, out
from wn_onnx.io.safeio import guard_outputs, write_json

sweep_app = typer.Typer(help="Noisy-training sweeps (points × σ × seeds …) on Dask, resumable.", no_args_is_help=True)


@sweep_app.command("plan")
def sweep_plan_command(sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP.toml")]) -> None:
    """Expand the sweep and count its runs; nothing is executed."""
    sweep = api.load_sweep(sweep_file)
    table = Table(title=Text(f"{sweep_file}: {len(sweep.runs)} runs"))
    table.add_column("axis")
    table.add_column("values")
    for axis in ("bn", "clamp", "seed", "noise", "point", "sigma"):
        values = Counter(str(r[axis]) for r in sweep.runs)
        table.add_row(axis, Text(", ".join(values)))
    out.print(table)
    mode = (
        "training under noise"
        if sweep.runs and sweep.runs[0]["training_noise"]
        else "clean training, noise at inference"
    )
    out.print(
        f"{len(sweep.runs)} runs ({mode}), {sweep.runs[0]['epochs'] if sweep.runs else 0} epochs each; results go to {sweep.db_path}",
        markup=False,
    )


@sweep_app.command("run")
def run_command(
    sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP.toml")],
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes of a local Dask cluster (0: serial, in this process).", min=0, max=MAX_THREADS
        ),
    ] = 2,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786).")
    ] = None,
    retries: Annotated[int, typer.Option(help="Retries of a failed run.", min=0, max=100)] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    memory: MemoryOption = None,
) -> None:
    """Execute every run not done yet; done runs are skipped, failed ones retried. Each run's noisy
    evaluation runs under --memory (local workers share it; see docs/guide.md "Memory")."""
    sweep = api.load_sweep(sweep_file)
    budget = None if memory is None else api.parse_size(memory)  # a malformed size is refused before anything runs
    api.RunStore(sweep.db_path).close()  # a damaged store is reported before the progress bar starts
    bar = None if quiet else Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=err)  # fmt: skip
    task = None

    def update(stats: dict) -> None:
        if bar is not None:
            bar.update(task, completed=stats["done"] + stats["failed"], total=stats["total"], failed=stats["failed"])

    if bar:
        with bar:
            task = bar.add_task(f"sweep {sweep_file.name}", total=len(sweep.runs), failed=0)
            stats = api.run_sweep(sweep, workers, scheduler, retries, update, budget)
    else:
        stats = api.run_sweep(sweep, workers, scheduler, retries, memory=budget)
    elsewhere = f", {stats['elsewhere']} running in another client" if stats.get("elsewhere") else ""
    out.print(
        f"{stats['done']}/{stats['total']} runs done, {stats['failed']} failed{elsewhere} · {sweep.db_path}",
        markup=False,
    )
    if stats["failed"]:
        raise typer.Exit(1)


@sweep_app.command("status")
def status_command(sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP.toml")]) -> None:
    """Done / running / failed / pending runs."""
    sweep = api.load_sweep(sweep_file)
    counts = api.status_counts(sweep)
    out.print(" · ".join(f"{k} {v}" for k, v in counts.items()) + f" (of {len(sweep.runs)})", markup=False)


@sweep_app.command("report")
def sweep_report_command(
    sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP.toml")],
    out_path: Annotated[
        Path, typer.Option("--out", help="Report JSON (one file per noise/BN/clamp group when several).")
    ],
) -> None:
    """Turn finished runs into scan-schema reports (fit, plot, plan and check work on them)."""
    guard_outputs([out_path], [sweep_file])
    reports = api.sweep_reports(api.load_sweep(sweep_file))
    for name, report in reports.items():
        path = out_path if len(reports) == 1 else out_path.with_name(f"{out_path.stem}.{name}{out_path.suffix}")
        write_json(path, report)
        out.print(f"{path}: {len(report['points'])} points" + (", global" if report["global"] else ""), markup=False)
