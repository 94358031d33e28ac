"""Rich renderings of points and reports for the terminal."""

from __future__ import annotations

from rich.table import Table

STATUS_STYLE = {
    "ok": "green",
    "not-reached": "cyan",
    "no-drop-from-start": "red",
    "poor-fit": "yellow",
    "two-drops": "magenta",
    "failed": "bold red",
}


def format_mu(curve: dict) -> str:
    """μ ± err, or what the status makes of μ (a bound, a threshold value)."""
    mu, err, status = curve.get("mu"), curve.get("mu_err"), curve.get("status")
    if mu is None:
        return "—"
    if status == "not-reached":
        return f"> {mu:.3g}"
    if status == "no-drop-from-start":
        return f"≤ {mu:.3g}"
    if status == "poor-fit":
        return f"≈ {mu:.3g}"
    return f"{mu:.3g} ± {err:.2g}" if err is not None else f"{mu:.3g}"


def points_table(points: list[dict], title: str = "noise points") -> Table:
    table = Table(title=title)
    for col, just in (("#", "right"), ("tensor", "left"), ("op", "left"), ("shape", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for p in points:
        shape = "×".join("?" if d is None else str(d) for d in p["shape"]) if p["shape"] is not None else "?"
        table.add_row(str(p["index"]), p["tensor"], p["op_type"], shape)
    return table


def report_table(report: dict) -> Table:
    noise = report["noise"]
    kind = noise["kind"] + (f" ({noise['order']})" if noise.get("order") else "")
    table = Table(
        title=f"Walking Noise · {kind} · clean accuracy {report['clean_accuracy']:.2%} · {report['data']['samples']} samples"
    )
    for col, just in (
        ("#", "right"),
        ("tensor", "left"),
        ("op", "left"),
        ("μ ± err", "right"),
        ("a_max", "right"),
        ("a_min", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=just, overflow="fold")

    def row(index: str, tensor: str, op: str, curve: dict) -> None:
        style = STATUS_STYLE.get(curve["status"], "")
        table.add_row(
            index,
            tensor,
            op,
            format_mu(curve),
            "—" if curve["a_max"] is None else f"{curve['a_max']:.3f}",
            "—" if curve["a_min"] is None else f"{curve['a_min']:.3f}",
            f"[{style}]{curve['status']}[/]",
        )

    for p in report["points"]:
        row(str(p["index"]), p["tensor"], p["op_type"], p)
    if report.get("global"):
        if report["points"]:
            table.add_section()
        row("all", f"global ({len(report['global']['points'])} points)", "", report["global"])
    return table
