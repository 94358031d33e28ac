"""``wn-onnx plan --digital K``: which weight layers of an analog model stay digital, and what each buys."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from wn_onnx.cli.common import err, load_data, memory_bytes, out
from wn_onnx.errors import WnError
from wn_onnx.io.safeio import guard_outputs, write_json, write_text
from wn_onnx.results.names import shorten


def digital_command(report_path: Path, report: dict, k: int, evaluate: bool, at_time: str | None, model: Path | None,
                    data_options: dict, repeats: int, seed: int, batch_size: int, threads: int, memory: str | None,
                    as_json: bool, out_path: Path | None, html_path: Path | None = None) -> None:  # fmt: skip
    """The digital split of ``report`` (the ``k`` least robust layers noise-free) and, with
    ``evaluate``, its accuracy at ``at_time`` for every K ≤ k against the first K layers."""
    from wn_onnx.planner import check_digital, digital_order

    order = digital_order(report)
    check_digital(k, len(order))
    points = report["points"]
    payload: dict = {"report": str(report_path), "digital": k, "layers": [points[i]["index"] for i in order[:k]]}
    if evaluate:
        payload |= _evaluate(report, k, at_time, model, data_options, repeats, seed, batch_size, threads, memory)
    if html_path is not None and not evaluate:
        raise WnError("--html draws the accuracy per digital layer: add --evaluate")
    guard_outputs([out_path, html_path], [report_path, model, data_options.get("data")])
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
    table = Table(title=f"digital layers · {k} of {len(points)} kept noise-free, the least robust first")
    for col in ("#", "tensor", "op", "μ", "status"):
        table.add_column(col)
    from wn_onnx.results.names import mu_text

    for i in order[:k]:
        p = points[i]
        table.add_row(str(p["index"]), Text(shorten(str(p["tensor"]), 32)), Text(str(p["op_type"])), mu_text(report, p), p["status"])
    out.print(table)
    if evaluate:
        ev = payload["evaluation"]
        t2 = Table(title=f"accuracy at {ev['level_text']} ({repeats} chips, the same for every split)")
        for col in ("digital", "guided by μ", "first K layers", "gain"):
            t2.add_column(col)
        for row in ev["rows"]:
            gain = f"{row['gain']:+.2%}" if "gain" in row else ""
            t2.add_row(str(row["digital"]), f"{row['guided_accuracy']:.2%} ± {row['guided_std']:.2%}",
                       f"{row['uniform_accuracy']:.2%} ± {row['uniform_std']:.2%}", gain)  # fmt: skip
        out.print(t2)


def _evaluate(report: dict, k: int, at_time: str | None, model: Path | None, data_options: dict, repeats: int,
              seed: int, batch_size: int, threads: int, memory: str | None) -> dict:  # fmt: skip
    import numpy as np

    from wn_onnx.engine import Engine, SweepSettings, providers_for
    from wn_onnx.metrics import get_metric
    from wn_onnx.noise import noise_from_json
    from wn_onnx.planner import digital_plan
    from wn_onnx.scanner import clean_pass

    if model is None or (data_options.get("data") is None and data_options.get("dataset_name") is None):
        raise WnError("--digital with --evaluate needs --model and --data FILE.npz or --dataset NAME")
    spec = noise_from_json(report.get("noise"))
    if at_time is None:  # the longest time (largest strength) the scan measured
        top = max((max(p["sigmas"]) for p in report["points"] if p["sigmas"]), default=None)
        if top is None:
            raise WnError("the report has no measured level; give --at-time")
        from wn_onnx.results.names import level_text

        strength, text = np.array([top]), level_text(report, top)
    else:
        strength, text = spec.levels(at_time), at_time
        if strength.size != 1:
            raise WnError(f"--at-time takes one level, got {at_time!r}")
    from wn_onnx.cli.plan import match_model

    loaded, points = match_model(report, model)
    o = data_options
    dataset = load_data(loaded, o.get("data"), o.get("dataset_name"), o.get("split"), o.get("data_dir"), o.get("limit"),
                        o["limit_mode"], feeds=o.get("feed"), labels=o.get("labels"))  # fmt: skip
    scoring = get_metric(report.get("metric") or "top1").name
    engine = Engine(loaded, providers_for("cpu"), threads, memory_bytes(memory))
    dataset, base, _facts = clean_pass(engine, dataset, scoring, batch_size, label_free=False)
    # chips other than the scan's (its repeats chose the order): the evaluation is out of sample
    st = SweepSettings(strength, spec, repeats, int(report.get("seed", 0)) + 1 + seed, batch_size, metric=scoring)
    err.print(f"[dim]evaluating {2 * k + 1} splits at {text} on {len(dataset)} samples, {repeats} chips each[/]")
    plan = digital_plan(engine, report, points, k, st, dataset, base.clean)
    return {"evaluation": {"level": float(spec.axis.level(strength[0])), "level_text": text, "noise": report.get("noise"),
                           "repeats": repeats, "seed": seed, "clean_accuracy": base.clean, "rows": plan["rows"]}}  # fmt: skip
