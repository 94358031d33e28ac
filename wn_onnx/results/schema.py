"""The scan-report schema (docs/report-schema.md), checked where reports are read back.

Types and values are checked too: a baseline whose ``mu_err`` is 1e308 or NaN, or whose μ is a
string, would otherwise pass or crash every comparison made with it.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from wn_onnx.errors import WnError
from wn_onnx.io.safeio import read_text

SCHEMA_VERSION = 1  # written as "schema_version"; a report without it is refused
STATUSES = ("ok", "bracketed", "not-reached", "no-drop-from-start", "poor-fit", "two-drops", "failed")  # a curve's
FAILED = "failed"  # a walked point that could not be evaluated; its "reason" says why
NOT_RUN = "not-run"  # a point in an If branch never taken for the data: listed under "not_run", never walked

CURVE_KEYS = ("sigmas", "accuracy", "mu", "mu_err", "a_max", "a_min", "status")
POINT_KEYS = ("index", "tensor", "op_type", "shape", *CURVE_KEYS)
TOP_KEYS = ("model", "noise", "seed", "clean_accuracy", "num_classes", "points", "global")
MAX_ERROR = 1e100  # a fit error this large is no measurement


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(v: object) -> bool:
    return _number(v) and 0 <= v <= 1


def _curve_problems(name: str, curve: dict) -> list[str]:
    """Types and ranges of one curve's values (keys present; missing keys are named elsewhere)."""
    problems = []
    sigmas, accuracy = curve.get("sigmas", []), curve.get("accuracy", [])
    if not isinstance(sigmas, list) or not all(_number(s) and s >= 0 for s in sigmas):
        problems.append(f"{name}: 'sigmas' must be a list of finite numbers >= 0")
    elif any(b <= a for a, b in itertools.pairwise(sigmas)):
        problems.append(f"{name}: 'sigmas' must increase (one accuracy row per σ, in order)")
    if not isinstance(accuracy, list) or not all(isinstance(r, list) and all(map(_fraction, r)) for r in accuracy):
        problems.append(f"{name}: 'accuracy' must be a list of rows of fractions in [0, 1]")
    for key in ("a_max", "a_min"):
        if curve.get(key) is not None and not _number(curve[key]):
            problems.append(f"{name}: {key!r} must be a finite number or null, not {curve[key]!r:.40}")
    if curve.get("mu") is not None and not (_number(curve["mu"]) and curve["mu"] >= 0):  # μ is a σ
        problems.append(f"{name}: 'mu' must be a finite number >= 0 or null, not {curve['mu']!r:.40}")
    err = curve.get("mu_err")
    if err is not None and not (_number(err) and 0 <= err <= MAX_ERROR):
        problems.append(f"{name}: 'mu_err' must be a finite number >= 0 or null, not {err!r:.40}")
    if "fit" in curve and not isinstance(curve["fit"], dict):
        problems.append(f"{name}: 'fit' must be an object")
    if "index" in curve and not (isinstance(curve["index"], int) and not isinstance(curve["index"], bool)):
        problems.append(f"{name}: 'index' must be a whole number")
    for key in ("tensor", "op_type", "node"):
        if key in curve and not isinstance(curve[key], str):
            problems.append(f"{name}: {key!r} must be a string")
    return problems


def schema_problems(report: object) -> list[str]:
    """What keeps ``report`` from being a scan report; empty when it is one."""
    if not isinstance(report, dict):
        return ["not a JSON object"]
    problems = [f"missing key {k!r}" for k in ("schema_version", *TOP_KEYS) if k not in report]
    version = report.get("schema_version", 1)
    if not (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
        problems.append("'schema_version' must be a whole number >= 1")
    elif version > SCHEMA_VERSION:
        problems.append(f"schema_version {version} is newer than this wn-onnx reads ({SCHEMA_VERSION}): upgrade wn-onnx")
    if "clean_accuracy" in report and not _fraction(report["clean_accuracy"]):
        problems.append("'clean_accuracy' must be a fraction in [0, 1]")
    classes = report.get("num_classes", 0)
    if not (isinstance(classes, int) and not isinstance(classes, bool) and classes >= 0):
        problems.append("'num_classes' must be a whole number >= 0")
    if "noise" in report and not (isinstance(report["noise"], dict) and isinstance(report["noise"].get("kind"), str)):
        problems.append("'noise' must be an object with a 'kind'")
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
        problems += [f"{name} lacks {k!r}" for k in keys if k not in curve and k not in CURVE_KEYS]
        problems += curve_problems(name, curve)
    return problems


def curve_problems(name: str, curve: dict) -> list[str]:
    """What keeps ``curve`` from being a well-typed curve (its status, values and row count)."""
    if curve.get("status") not in STATUSES:
        return [f"{name} has no valid status"]
    problems = [f"{name} lacks {k!r}" for k in CURVE_KEYS if k not in curve] + _curve_problems(name, curve)
    if not problems and len(curve["accuracy"]) != len(curve["sigmas"]):
        problems.append(f"{name}: {len(curve['accuracy'])} accuracy rows for {len(curve['sigmas'])} σ values")
    return problems


def as_report_dict(report: object) -> dict:
    """A report's JSON object, from a :class:`wn_onnx.Report` (its ``to_json()``) or the object
    itself; every reader that takes report dicts (figures, HTML pages) takes Reports through this."""
    if isinstance(report, dict):
        return report
    to_json = getattr(report, "to_json", None)
    if callable(to_json) and hasattr(report, "points"):
        return to_json()
    raise WnError(f"not a wn-onnx scan report: a {type(report).__name__}, not a Report or its JSON object")


def read_report(path: str | Path) -> dict:
    """A scan report from disk; a missing file, bad JSON or a schema problem is one clear error."""
    p = Path(path)
    text = read_text(p, "report")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise WnError(f"{p}: not a JSON report ({err})") from None
    except RecursionError:
        raise WnError(f"{p}: not a JSON report (nested too deeply)") from None
    problems = schema_problems(report)
    if problems:
        raise WnError(f"{p}: not a wn-onnx scan report ({'; '.join(problems[:3])})")
    return report
