"""The scan-report schema (README "Report JSON"), checked where reports are read back."""

from __future__ import annotations

import json
from pathlib import Path

from wn_onnx.errors import WnError
from wn_onnx.fit import STATUSES

FAILED = "failed"  # a walked point that could not be evaluated; its "reason" says why

CURVE_KEYS = ("sigmas", "accuracy", "mu", "mu_err", "a_max", "a_min", "status")
POINT_KEYS = ("index", "tensor", "op_type", "shape", *CURVE_KEYS)
TOP_KEYS = ("model", "noise", "seed", "clean_accuracy", "num_classes", "points", "global")


def schema_problems(report: object) -> list[str]:
    """What keeps ``report`` from being a scan report; empty when it is one."""
    if not isinstance(report, dict):
        return ["not a JSON object"]
    problems = [f"missing key {k!r}" for k in TOP_KEYS if k not in report]
    points = report.get("points")
    if not isinstance(points, list):
        return [*problems, "'points' is not a list"]
    curves = [(f"point {i}", p, POINT_KEYS) for i, p in enumerate(points)]
    if report.get("global") is not None:
        curves.append(("global", report["global"], CURVE_KEYS))
    for name, curve, keys in curves:
        if not isinstance(curve, dict):
            problems.append(f"{name} is not an object")
            continue
        problems += [f"{name} lacks {k!r}" for k in keys if k not in curve]
        if curve.get("status") not in (*STATUSES, FAILED):
            problems.append(f"{name} has no valid status")
        elif len(curve.get("accuracy", [])) != len(curve.get("sigmas", [])):
            problems.append(
                f"{name}: {len(curve.get('accuracy', []))} accuracy rows for {len(curve.get('sigmas', []))} σ values"
            )
    return problems


def read_report(path: str | Path) -> dict:
    """A scan report from disk; a missing file, bad JSON or a schema problem is one clear error."""
    p = Path(path)
    if not p.is_file():
        raise WnError(f"report not found: {p}")
    try:
        report = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WnError(f"{p}: not a JSON report ({err})") from None
    problems = schema_problems(report)
    if problems:
        raise WnError(f"{p}: not a wn-onnx scan report ({'; '.join(problems[:3])})")
    return report
