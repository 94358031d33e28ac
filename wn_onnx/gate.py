"""The CI gate: policies over a scan report, with Markdown, JSON and JUnit outputs.

Policies
* ``min_mu`` — a floor on μ, globally and per point; per-point floors by pattern in TOML.
* baseline — a point fails when its μ dropped by more than ``max_drop`` (a fraction) *beyond*
  the combined fit error: μ_new < μ_base·(1 − max_drop) − Z·√(err_base² + err_new²), so a change
  within the statistical error never fails CI.

Statuses are read conservatively (README, "Statuses"): only an ``ok`` or ``two-drops`` μ gets
the benefit of its error bar. ``bracketed`` and ``poor-fit`` are judged on the low end of the σ
interval the drop is known to lie in, ``not-reached`` on its lower bound (the largest σ measured),
``no-drop-from-start`` and ``failed`` fail every floor and every baseline.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tomllib

from wn_onnx.errors import ConfigError, WnError
from wn_onnx.graph_passes.points import parse_indices
from wn_onnx.io import config as cs
from wn_onnx.io.safeio import read_text
from wn_onnx.results.fit import RESOLVED, pessimistic
from wn_onnx.results.names import level_text
from wn_onnx.results.report import clean_nonfinite

Z = 2.0  # standard errors of slack in the baseline comparison
CONFIG = {
    "noise": cs.NOISE, "on": cs.TARGET, "order": cs.ORDER, "sigma_ratio": cs.FRACTION, "sigma_mul": cs.NON_NEGATIVE,
    "sigma_add": cs.NON_NEGATIVE, "device": cs.Key((str,), "cpu or cuda", lambda v: v in ("cpu", "cuda")), "sigmas": cs.GRID, "repeats": cs.REPEATS, "seed": cs.SEED,
    "mode": cs.Key((str,), "walking, global or both", lambda v: v in ("walking", "global", "both")), "at": cs.STRING,
    "min_mu": cs.NON_NEGATIVE, "global_min_mu": cs.NON_NEGATIVE, "max_mu_drop": cs.Key((str, int, float), "like 20% or 0.2"),
    "baseline": cs.STRING, "data": cs.STRING, "label_free": cs.BOOL, "limit": cs.POSITIVE_INT, "output": cs.STRING,
    "dataset": cs.STRING, "metric": cs.STRING, "feed": cs.Key((str,), "NAME=VALUE", many=True), "batch_size": cs.POSITIVE_INT,
    "estimator": cs.Key((str,), "grid or sequential", lambda v: v in ("grid", "sequential")),
    "tolerance": cs.Key(cs.NUMBER, "a number in (0, 1)", lambda v: 0 < v < 1),
    "points": cs.Key((dict,), "a table of pattern = minimum μ (a finite number >= 0)",
                  lambda v: all(cs.NON_NEGATIVE.accepts(f) for f in v.values())),
}  # fmt: skip


@dataclass
class Verdict:
    """One rule's outcome for one curve (``all(v.passed for v in verdicts)`` is the gate)."""

    name: str  # "point 3 (tensor)" or "global"
    passed: bool
    message: str
    mu: float | None
    mu_err: float | None
    status: str
    threshold: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Policy:
    min_mu: float | None = None  # every point
    global_min_mu: float | None = None
    max_drop: float | None = None  # fraction, with a baseline
    point_floors: list[tuple[str, float]] = field(default_factory=list)  # (pattern, min μ)


def parse_drop(text: str | None) -> float | None:
    """``20%`` or ``0.2`` → 0.2."""
    if text is None:
        return None
    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise WnError(f"the allowed μ drop must look like 20% or 0.2, got {text!r}") from None
    if not 0 <= value < 1:
        raise WnError(f"the allowed μ drop must lie in [0%, 100%), got {text!r}")
    return value


def load_config(path: Path | None) -> dict:
    """``wn-onnx.toml`` (top level) or ``pyproject.toml`` (``[tool.wn-onnx]``); unknown keys named."""
    if path is None:
        for candidate in (Path("wn-onnx.toml"), Path("pyproject.toml")):
            if candidate.is_file():
                path = candidate
                break
        else:
            return {}
    try:
        raw = tomllib.loads(read_text(path, "config file"))
    except tomllib.TOMLDecodeError as err:
        raise WnError(f"{path}: malformed TOML ({err})") from None
    conf = raw
    if Path(path).name == "pyproject.toml":
        tool = raw.get("tool", {})
        conf = tool.get("wn-onnx", {}) if isinstance(tool, dict) else None
    if not isinstance(conf, dict):
        raise WnError(f"{path}: [tool.wn-onnx] must be a table")
    cs.check_keys(conf, CONFIG, str(path))
    for pattern in conf.get("points", {}):
        try:
            check_pattern(pattern)
        except WnError as err:
            raise ConfigError(f"{path}: [points] {err}") from None
    if isinstance(conf.get("sigmas"), list):  # a list of σ values: the comma form of the grid
        conf["sigmas"] = ",".join(repr(float(v)) for v in conf["sigmas"])
    return conf


def _matches(pattern: str, point: dict, count: int) -> bool:
    """Whether a config's point pattern selects ``point``: the grammar of every point selection
    (``0,3,5-8``, ``op:Conv,Gemm``, ``re:PATTERN`` on tensor and node names; graph_passes/points.py)
    among the report's ``count`` point indices."""
    if pattern.startswith("op:"):
        return point["op_type"].lower() in {p.strip().lower() for p in pattern[3:].split(",")}
    if pattern.startswith("re:"):
        try:  # older reports lack "node"
            return any(re.search(pattern[3:], point.get(key) or "") is not None for key in ("tensor", "node"))
        except re.error as err:
            raise WnError(f"threshold pattern {pattern!r}: invalid regular expression ({err})") from None
    return point["index"] in parse_indices(pattern, max([count, *(int(n) + 1 for n in re.findall(r"\d+", pattern))]))


def check_pattern(pattern: str) -> None:
    """A config's point pattern, checked before any scan: indices (``0,3,5-8``), ``op:TYPE`` or
    ``re:PATTERN`` (a bare name is not a regular expression: the grammar of ``--at``)."""
    _matches(pattern, {"index": -1, "op_type": "", "tensor": "", "node": ""}, 1)


def _value(curve: dict) -> float | None:
    return curve.get("mu") if curve.get("mu") is not None else (curve.get("fit") or {}).get("mu_threshold")


def _failed(name: str, curve: dict, rule: str) -> Verdict:
    """A point the scan could not evaluate fails every rule, saying why."""
    return Verdict(name, False, f"{name}: not evaluated ({curve.get('reason', 'failed')})", None, None, "failed", rule)


@dataclass(frozen=True)
class Reading:
    """How a report's μ reads: on a falling axis (bits, strength 2^-bits) a floor is the largest bit
    width allowed at μ and every comparison turns round; elsewhere μ is the strength itself."""

    falling: bool = False
    unit: str = ""

    @classmethod
    def of(cls, report: dict) -> Reading:
        axis = report.get("axis") or {}
        return cls(axis.get("more") == "down", str(axis.get("unit") or ""))

    def strength(self, level: float) -> float:
        return 2.0**-level if self.falling else level

    def text(self, strength: float, error: float | None = None) -> str:
        """``strength`` (± ``error``) as the axis reads it: bits, a time in its largest unit (119 ± 37 d)."""
        if self.unit == "s":
            return level_text({"axis": {"unit": "s"}}, strength, error)
        value = -np.log2(strength) if self.falling and strength > 0 else strength
        spread = f" ± {error:.2g}" if error and not self.falling else ""
        return f"{value:.4g}{spread}{' ' + self.unit if self.unit else ''}"

    def sign(self, at_least: bool) -> str:
        """The comparison as the axis reads it (a strength ≥ floor is a level ≤ floor on a falling axis)."""
        return ("≥" if at_least else "<") if not self.falling else ("≤" if at_least else ">")


def judge_floor(name: str, curve: dict, floor: float, reading: Reading = Reading()) -> Verdict:
    """``floor`` in the report's levels (σ, seconds, bits: on bits the most a layer may need)."""
    shown = reading.text(floor) if reading.unit == "s" else f"{floor:g}{' ' + reading.unit if reading.unit else ''}"
    rule = f"{'max' if reading.falling else 'min'} μ {shown}"
    if curve["status"] == "failed":
        return _failed(name, curve, rule)
    mu, err, status = _value(curve), curve.get("mu_err"), curve["status"]
    low = pessimistic(curve)
    ok = low is not None and low >= reading.strength(floor)
    if mu is None:
        return Verdict(name, False, f"{name}: no μ ({status}) fails {rule}", None, err, status, rule)
    shown = reading.text(mu)
    bound, below = ("<", "≥") if reading.falling else (">", "≤")
    if status == "not-reached":
        why = f"μ {bound} {shown} (never reached the midpoint)"
    elif status == "no-drop-from-start":
        why = f"μ {below} {shown} (below the midpoint from the smallest level)"
    elif status in ("bracketed", "poor-fit"):
        what = "only bracketed by the grid" if status == "bracketed" else "the fit is poor"
        why = f"μ ≈ {shown}, judged on the low end {reading.text(low)} ({what})"
    else:
        why = f"μ = {reading.text(mu, err)}"
    return Verdict(name, ok, f"{name}: {why} {reading.sign(ok)} {rule}", mu, err, status, rule)


def judge_drop(name: str, base: dict, new: dict, max_drop: float) -> Verdict:
    """Only resolved μ values get error-bar slack; the new curve is otherwise read at its lowest
    possible μ (:func:`pessimistic`), so an unresolved curve cannot pass by a wide error."""
    rule = f"drop ≤ {max_drop:.0%}"
    if new["status"] == "failed":
        return _failed(name, new, rule)
    # like with like: where either side is unresolved both are read at their lowest possible μ,
    # so a report compared with itself never fails
    both = base["status"] in RESOLVED and new["status"] in RESOLVED
    mb, mn = (_value(base), _value(new)) if both else (pessimistic(base), pessimistic(new))
    eb = (base.get("mu_err") or 0.0) if base["status"] in RESOLVED else 0.0
    en = (new.get("mu_err") or 0.0) if new["status"] in RESOLVED else 0.0
    if mb is None or mn is None or base["status"] in ("failed", "no-drop-from-start"):
        return Verdict(name, False, f"{name}: μ not comparable (baseline {base['status']}, now {new['status']})",
                       mn, en, new["status"], rule)  # fmt: skip
    limit = mb * (1 - max_drop) - Z * float(np.hypot(eb, en))
    ok = mn >= limit
    drop = (mb - mn) / mb if mb else 0.0
    msg = (f"{name}: μ {mn:.4g} ± {en:.2g} vs baseline {mb:.4g} ± {eb:.2g} (drop {drop:.1%}); "
           f"fails below {limit:.4g} = baseline·(1−{max_drop:.0%}) − {Z:g}σ")  # fmt: skip
    return Verdict(name, ok, msg, mn, en, new["status"], f"drop ≤ {max_drop:.0%}")


def evaluate_policy(report: dict, policy: Policy, baseline: dict | None) -> list[Verdict]:
    """One verdict per (point, rule) and per global rule."""
    verdicts = []
    reading = Reading.of(report)
    base_points = {p["tensor"]: p for p in (baseline or {}).get("points", [])}
    count = 1 + max((p["index"] for p in report.get("points", [])), default=-1)
    if baseline is not None:
        _same_model(report, baseline, base_points)
    for p in report.get("points", []):
        name = f"point {p['index']} ({p['tensor']})"
        floors = [f for pat, f in policy.point_floors if _matches(pat, p, count)]
        strictest = min if reading.falling else max  # on bits a floor is the most a layer may need
        floor = strictest(floors) if floors else policy.min_mu
        if floor is not None:
            verdicts.append(judge_floor(name, p, floor, reading))
        if policy.max_drop is not None and p["tensor"] in base_points:
            verdicts.append(judge_drop(name, base_points[p["tensor"]], p, policy.max_drop))
        elif policy.max_drop is not None:  # the same model scanned at other points: said, never silently unchecked
            verdicts.append(Verdict(name, False, f"{name}: not in the baseline report, so its μ drop cannot be checked",
                                    p.get("mu"), p.get("mu_err"), p["status"], f"drop ≤ {policy.max_drop:.0%}"))  # fmt: skip
    g = report.get("global")
    if g:
        floor = policy.global_min_mu if policy.global_min_mu is not None else policy.min_mu
        if floor is not None:
            verdicts.append(judge_floor("global", g, floor, reading))
        if policy.max_drop is not None and baseline and baseline.get("global"):
            verdicts.append(judge_drop("global", baseline["global"], g, policy.max_drop))
    if not verdicts:
        raise WnError("no policy to check: give a minimum μ, a baseline with an allowed μ drop, or thresholds in the config")
    return verdicts


def _same_model(report: dict, baseline: dict, base_points: dict) -> None:
    """A baseline is the same model (the same file digest) or the same network in another version
    (every point's tensor is in it); one shared name such as ``logits`` proves neither."""
    if report.get("model_digest") is not None and report.get("model_digest") == baseline.get("model_digest"):
        return
    missing = [p["tensor"] for p in report.get("points", []) if p["tensor"] not in base_points]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WnError(f"the baseline report is from another model: {len(missing)} of {len(report.get('points', []))} "
                      f"points are not in it ({shown}) and its model digest differs")  # fmt: skip


def markdown(verdicts: list[Verdict], report: dict) -> str:
    failed = [v for v in verdicts if not v.passed]
    head = f"## wn-onnx check: {'FAILED' if failed else 'passed'} ({len(verdicts) - len(failed)}/{len(verdicts)} checks pass)"
    nonfinite = clean_nonfinite(report)
    lines = [head, "", f"Model `{report.get('model')}`, {report['noise']['kind']} noise on {report.get('on', 'activations')}, "
             f"clean accuracy {report['clean_accuracy']:.2%}"
             f"{f' ({nonfinite})' if nonfinite else ''}.", "",
             "| check | μ | status | rule | result |", "|---|---|---|---|---|"]  # fmt: skip
    reading = Reading.of(report)
    for v in verdicts:
        mu = "—" if v.mu is None else reading.text(v.mu, v.mu_err)
        lines.append(f"| {v.name} | {mu} | {v.status} | {v.threshold} | {'✅ pass' if v.passed else '❌ FAIL'} |")
    if failed:
        lines += ["", "Failures:", *[f"- {v.message}" for v in failed]]
    return "\n".join(lines) + "\n"


def junit(verdicts: list[Verdict], report: dict, error: str | None = None) -> str:
    """JUnit XML: one testcase per check; ``error`` makes a single errored testcase."""
    suite = ET.Element("testsuite", name="wn-onnx", tests=str(max(len(verdicts), 1)))
    if error is not None:
        suite.set("errors", "1")
        case = ET.SubElement(suite, "testcase", classname="wn-onnx", name="scan")
        ET.SubElement(case, "error", message=error).text = error
    else:
        suite.set("failures", str(sum(not v.passed for v in verdicts)))
        for v in verdicts:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"wn-onnx.{Path(str(report.get('model', 'model'))).stem}",
                name=f"{v.name} [{v.threshold}]",
            )
            if not v.passed:
                ET.SubElement(case, "failure", message=v.message).text = v.message
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
