"""Rich renderings of points and reports for the terminal.

Tables fit the console width (80 columns included): a long tensor name is shortened in the middle
(``jax2tf_get_lo…/conv_2/Relu``), never folded mid-token; the full names are in the JSON. Every
string from a model goes in as :class:`rich.text.Text`, so a tensor named ``[/]r`` is text, not markup.
"""

from __future__ import annotations

import math

from rich import box
from rich.table import Table
from rich.text import Text

from wn_onnx.results.names import shorten

STATUS_STYLE = {
    "ok": "green",
    "not-reached": "cyan",
    "no-drop-from-start": "red",
    "poor-fit": "yellow",
    "two-drops": "magenta",
    "bracketed": "yellow",
    "failed": "bold red",
}
OP_WIDTH = 10
GAP = 2  # characters between two columns (collapsed padding + the box's separator)
MIN_TENSOR = 12


def format_mu(curve: dict, report: dict | None = None) -> str:
    """μ ± err, or what the status makes of μ (a bound, a threshold value); on a time axis in
    its largest unit (``> 10 y``)."""
    mu, err, status = curve.get("mu"), curve.get("mu_err"), curve.get("status")
    if mu is None:
        return "—"
    if "levels" in curve:  # an axis whose damage grows as it falls (bits): μ in its levels
        return _format_falling(curve)
    if report is not None and (report.get("axis") or {}).get("unit") == "s":
        from wn_onnx.results.names import mu_text

        return mu_text(report, curve)
    if status == "not-reached":
        return f"> {mu:.3g}"
    if status == "no-drop-from-start":
        return f"≤ {mu:.3g}"
    if status == "poor-fit":
        return f"≈ {mu:.3g}"
    bracket = (curve.get("fit") or {}).get("bracket")
    if status == "bracketed" and bracket:
        return f"{bracket[0]:.3g}…{bracket[1]:.3g}"
    return f"{mu:.3g} ± {err:.2g}" if err is not None else f"{mu:.3g}"


def _format_falling(curve: dict) -> str:
    """μ on a falling axis (bits = −log2 strength): bounds flip, a bracket's ends swap."""
    level, err, status = curve.get("mu_level"), curve.get("mu_level_err"), curve.get("status")
    if level is None:
        return "—"
    if status == "not-reached":
        return f"< {level:.3g}"
    if status == "no-drop-from-start":
        return f"≥ {level:.3g}"
    if status == "poor-fit":
        return f"≈ {level:.3g}"
    bracket = (curve.get("fit") or {}).get("bracket")
    if status == "bracketed" and bracket:
        lo, hi = (-math.log2(b) for b in reversed(bracket))
        return f"{lo:.3g}…{hi:.3g}"
    return f"{level:.3g} ± {err:.2g}" if err is not None else f"{level:.3g}"


def _fitted(rows: list[list[str]], tensor_col: int, width: int, title: str | None, right: tuple[int, ...] = ()) -> Table:
    """A compact table whose tensor column takes what the other columns leave of ``width``.

    Columns are GAP characters apart and no wider than their widest cell, so the tensor column gets
    ``width - others - GAP·(columns - 1)``; its names are shortened in the middle to fit."""
    table = Table(title=None if title is None else Text(title), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True, title_justify="left")  # fmt: skip
    columns = len(rows[0])
    sizes = [max(len(line) for r in rows for line in r[c].splitlines() or [""]) for c in range(columns)]
    sizes[tensor_col] = min(
        sizes[tensor_col], max(MIN_TENSOR, width - (sum(sizes) - sizes[tensor_col]) - GAP * (columns - 1))
    )
    for row in rows[1:]:
        row[tensor_col] = shorten(row[tensor_col], sizes[tensor_col])
    for c, header in enumerate(rows[0]):
        table.add_column(header, justify="right" if c in right else "left", width=sizes[c], no_wrap=True)
    return table


def points_table(points: list[dict], title: str | None = "noise points", width: int = 80) -> Table:
    """Index, tensor, op and shape of each point; a shape that is a long symbolic expression (a
    detector's floor(floor(height/2 − 1/2)/2 …)) is shortened to half of what the index and the
    op leave of ``width`` (the tensor name keeps the other half), so no column is ever dropped."""
    index_width = max((len(str(p["index"])) for p in points), default=1)
    room = max(MIN_TENSOR, (width - index_width - OP_WIDTH - GAP * 3) // 2)
    rows = [["#", "tensor", "op", "shape"]]
    for p in points:
        shape = "×".join("?" if d is None else str(d) for d in p["shape"]) if p["shape"] is not None else "?"
        rows.append([str(p["index"]), str(p["tensor"]), shorten(str(p["op_type"]), OP_WIDTH), shorten(shape, room)])
    table = _fitted(rows, 1, width, title, right=(0,))
    for row in rows[1:]:
        table.add_row(*map(Text, row))
    return table


def _level(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"  # a failed point has no curve


def report_table(report: dict, width: int = 80) -> Table:
    """μ per point and globally; ``acc max``/``acc min`` are the report's ``a_max``/``a_min``: the
    accuracy the curve achieves before the drop and where it ends."""
    noise = report["noise"]
    kind = noise["kind"] + (f" ({noise['order']})" if noise.get("order") else "")
    kind += f" on {report['on']}" if report.get("on") else ""
    axis = report.get("axis")
    kind += f" · μ in {axis['name']}" if axis else ""
    curves = [(str(p["index"]), str(p["tensor"]), str(p["op_type"]), p) for p in report["points"]]
    if report.get("global"):
        curves.append(("all", "global", f"{len(report['global']['points'])} points", report["global"]))
    rows = [["#", "tensor", "op", "μ ± err", "acc\nmax", "acc\nmin", "status"]]
    rows += [[i, t, shorten(op, OP_WIDTH), format_mu(c, report), _level(c["a_max"]), _level(c["a_min"]), str(c["status"])]
             for i, t, op, c in curves]  # fmt: skip
    title = (
        f"Walking Noise · {kind} · clean accuracy {report['clean_accuracy']:.2%} · {report['data']['samples']} samples"
    )
    table = _fitted(rows, 1, width, title, right=(0, 3, 4, 5))
    for n, row in enumerate(rows[1:]):
        if report.get("global") and report["points"] and n == len(report["points"]):
            table.add_section()
        table.add_row(*map(Text, row[:-1]), Text(row[-1], style=STATUS_STYLE.get(row[-1], "")))
    return table


def weights_table(rows: list[dict], title: str, width: int = 80) -> Table:
    """Mean |w| per learnable layer, the layer named by its output point (index and tensor)."""
    ratio = any("ratio" in r for r in rows)
    cells = [["#", "tensor", "op", "shape", "mean |w|", *(["ratio"] if ratio else [])]]
    cells += [["—" if r["point"] is None else str(r["point"]), str(r["tensor"]), shorten(str(r["op_type"]), OP_WIDTH),
               "×".join(map(str, r["shape"])), f"{r['mean_abs']:.4g}", *([f"{r['ratio']:.3g}"] if ratio else [])]
              for r in rows]  # fmt: skip
    table = _fitted(cells, 1, width, title, right=(0, 4, 5))
    for row in cells[1:]:
        table.add_row(*map(Text, row))
    return table
