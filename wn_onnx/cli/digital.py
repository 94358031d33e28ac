"""``wn-onnx plan --digital K``: which weight layers of an analog model stay digital, and what each buys."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from wn_onnx import api
from wn_onnx.cli.common import err, out
from wn_onnx.cli.options import DataArgs
from wn_onnx.errors import WnError
from wn_onnx.io.safeio import guard_outputs, write_json, write_text
from wn_onnx.results.names import mu_text, shorten


def digital_command(report_path: Path, k: int, evaluate: bool, at_time: str | None, model: Path | None,
                    data: DataArgs, repeats: int, seed: int, as_json: bool, out_path: Path | None,
                    html_path: Path | None = None) -> None:  # fmt: skip
    """The digital split of the report (the ``k`` least robust layers noise-free) and, with
    ``evaluate``, its accuracy at ``at_time`` for every K ≤ k against the first K layers."""
    if html_path is not None and not evaluate:
        raise WnError("--html draws the accuracy per digital layer: add --evaluate")
    guard_outputs([out_path, html_path], [report_path, model, data.data, data.labels])
    dataset = None
    if evaluate:
        if model is None or (data.data is None and data.dataset is None):
            raise WnError("--digital with --evaluate needs --model and --data FILE.npz or --dataset NAME")
        loaded = api.load_model(model)
        dataset = data.read(loaded)
        _, text = api.digital_strength(api.read_report(report_path, walked=True), at_time)
        err.print(f"[dim]evaluating {2 * k + 1} splits at {text} on {len(dataset)} samples, {repeats} chips each[/]")
    settings = {key: v for key, v in data.scan_settings().items() if key in ("batch_size", "threads", "memory")}
    payload = api.digital(report_path, k, evaluate=evaluate, model=model, data=dataset, at_time=at_time, repeats=repeats,
                          seed=seed, **settings)  # fmt: skip
    if out_path:
        write_json(out_path, payload)
    if html_path:
        from wn_onnx.results.figures import digital_figure, html_page

        page = html_page(f"digital layers of {report_path.name}", [("accuracy per digital layer", digital_figure(payload["evaluation"]))],
                         [f"layers kept digital, least robust first: {', '.join(map(str, payload['layers'])) or 'none'}"])  # fmt: skip
        write_text(html_path, page)
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    render_digital(api.read_report(report_path), payload)


def render_digital(report: dict, payload: dict) -> None:
    """The layers kept digital and, when evaluated, the accuracy of every split."""
    by_index = {p["index"]: p for p in report["points"]}
    table = Table(title=f"digital layers · {payload['digital']} of {len(by_index)} kept noise-free, the least robust first")
    for col in ("#", "tensor", "op", "μ", "status"):
        table.add_column(col)
    for index in payload["layers"]:
        p = by_index[index]
        table.add_row(str(p["index"]), Text(shorten(str(p["tensor"]), 32)), Text(str(p["op_type"])), mu_text(report, p), p["status"])
    out.print(table)
    ev = payload.get("evaluation")
    if ev:
        t2 = Table(title=f"accuracy at {ev['level_text']} ({ev['repeats']} chips, the same for every split)")
        for col in ("digital", "guided by μ", "first K layers", "gain"):
            t2.add_column(col)
        for row in ev["rows"]:
            gain = f"{row['gain']:+.2%}" if "gain" in row else ""
            t2.add_row(str(row["digital"]), f"{row['guided_accuracy']:.2%} ± {row['guided_std']:.2%}",
                       f"{row['uniform_accuracy']:.2%} ± {row['uniform_std']:.2%}", gain)  # fmt: skip
        out.print(t2)
