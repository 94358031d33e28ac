"""The public Python API: the README's example runs, the report model round-trips, errors are typed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import wn_onnx
from wn_onnx.errors import ConfigError, DataError, ModelError, WnError

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    report = scope["report"]
    assert [p.index for p in report.points] == [0, 1, 2, 3, 4]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert scope["same"].to_json() == report.to_json()
    frame = scope["frame"]
    assert len(frame) == 17 * 2 * (5 + 1)  # five points and the global curve, 17 σ and 2 repeats each
    assert sum(scope["plan"].executions) == 10 and scope["plan"].to_json()["budget"] == 10


def test_api_scan_is_the_cli_scan(tmp_path):
    """Same model, data and settings: the API's report is the command's, number for number."""
    from typer.testing import CliRunner

    from wn_onnx.cli.app import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["scan", "--sigmas", "log:1e-2:1e2:9", "--repeats", "2", "--at", "1,3",
                                   "--quiet", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    cli = json.loads(out.read_text())
    api = wn_onnx.scan(sigmas="log:1e-2:1e2:9", repeats=2, at="1,3").to_json()
    for key in ("clean_accuracy", "num_classes", "config_hash", "points", "global"):
        assert api[key] == cli[key], key


def test_report_round_trip_keeps_every_key_and_refuses_newer_schemas():
    report = wn_onnx.scan(sigmas="log:1e-2:1e2:9", repeats=1, mode="walking", at="0")
    d = json.loads(json.dumps(report.to_json()))
    d["points"][0]["some_future_key"] = {"x": 1}
    d["points"].append({**d["points"][0], "index": 7, "status": "failed", "fit": {"note": "boom"}, "mu": None,
                        "mu_err": None, "sigmas": [], "accuracy": [], "reason": "boom"})  # fmt: skip
    back = wn_onnx.Report.from_json(d)
    assert back.to_json() == d and list(back.to_json()) == list(d)  # the keys' order too
    assert back.points[0].extra == {"some_future_key": {"x": 1}} and back.extra == {} and back.points[0].fit.extra == {}
    assert back.points[1].fit.note == "boom" and back.points[1].reason == "boom" and not back.points[1].resolved
    assert back.points[1].fit.to_json() == {"note": "boom"}  # a failed point's fit holds only its note
    assert back.global_ is None and back.points[0].fit.shape in ("linear", "log", "frechet", "weibull")
    with pytest.raises(WnError, match="newer"):
        wn_onnx.Report.from_json({**d, "schema_version": 99})
    with pytest.raises(WnError, match="not a wn-onnx scan report"):
        wn_onnx.Report.from_json({"points": []})


def test_to_pandas_long_has_one_row_per_point_level_and_repeat():
    report = wn_onnx.scan(sigmas="log:1e-2:1e2:5", repeats=3, at="2")
    frame = report.to_pandas()
    assert len(frame) == 2 * 5 * 3  # (point 2, global) × 5 σ × 3 repeats
    assert frame.point.dtype == np.int64 and frame.repeat.dtype == np.int64 and frame.accuracy.dtype == np.float64
    p = report.points[0]
    point = frame[frame.point == 2]
    assert (point.kind == "point").all() and (point.tensor == p.tensor).all() and (point.op_type == p.op_type).all()
    assert list(point.sigma) == list(np.repeat(p.sigmas, 3)) == list(point.level)
    assert list(point.repeat) == [0, 1, 2] * 5
    assert list(point.accuracy) == [a for row in p.accuracy for a in row]
    assert (point.mu == p.mu).all() and (point.status == p.status).all()
    glob = frame[frame.kind == "global"]
    assert (glob.point == -1).all() and list(glob.accuracy) == [a for row in report.global_.accuracy for a in row]
    assert (glob.status == report.global_.status).all() and (glob.tensor == "").all()


def test_to_pandas_wide_has_one_row_per_curve():
    report = wn_onnx.scan(sigmas="log:1e-2:1e2:9", repeats=2, at="1,3")
    wide = report.to_pandas(long=False)
    assert list(wide.point) == [1, 3, -1] and wide.point.dtype == np.int64
    assert list(wide.kind) == ["point", "point", "global"] and list(wide.n_levels) == [9, 9, 9]
    curves = [*report.points, report.global_]
    assert list(wide.status) == [c.status for c in curves]
    assert np.allclose(wide.mu, [c.mu for c in curves]) and np.allclose(wide.a_max, [c.a_max for c in curves])
    assert list(wide.tensor[:2]) == [p.tensor for p in report.points]
    assert list(wide.node[:2]) == [p.node for p in report.points]
    assert wide.mu_level.isna().all()  # a Gaussian scan has no falling axis


def test_fit_curve_matches_the_scan_fit():
    p = wn_onnx.scan(sigmas="log:1e-2:1e2:13", repeats=2, mode="walking", at="3").points[0]
    n = len(np.load(wn_onnx.DEFAULT_DATA)["y"])
    refit = wn_onnx.fit_curve(p.sigmas, p.accuracy, chance=0.1, n_samples=n, clean=None)
    assert refit.status == p.status and refit.mu == pytest.approx(p.mu, rel=0.05)


def test_errors_are_typed_and_name_concepts(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        wn_onnx.load_model(bad)
    with pytest.raises(ConfigError, match="data without a model"):
        wn_onnx.scan(data=wn_onnx.DEFAULT_DATA)
    with pytest.raises(ConfigError, match=r"^repeats must lie in \[1, "):
        wn_onnx.scan(repeats=0)
    for bad, said in ({"threads": 1000}, "threads must lie in"), ({"seed": -1}, "seed must lie in"), ({"jobs": 2.5}, "whole"):
        with pytest.raises(ConfigError, match=said):  # checked where the configuration is made, before any work
            wn_onnx.ScanConfig(**bad)
    with pytest.raises(DataError):
        wn_onnx.fit_curve([1, 2], [0.5], chance=0.1, n_samples=10)
    with pytest.raises(ConfigError, match="point selection"):
        wn_onnx.find_points(wn_onnx.DEFAULT_MODEL, at="-3")
    assert issubclass(WnError, ValueError) and set(wn_onnx.__all__) >= {"scan", "Report", "plan", "check", "fit_curve"}


def test_cli_refuses_data_without_a_model(tmp_path):
    """Was: `scan --data mine.npz` with no model scanned the embedded digits model on the user's data."""
    from typer.testing import CliRunner

    from wn_onnx.cli.app import app

    res = CliRunner().invoke(app, ["scan", "--data", str(wn_onnx.DEFAULT_DATA), "--quiet"])
    assert res.exit_code != 0 and "without a MODEL" in str(res.exception or res.output)


def test_check_patterns_match_node_names_as_point_selection_does():
    """Was: a check config's `re:` matched tensor names only, while `--at re:` matches node names too."""
    report = wn_onnx.scan(sigmas="log:1e-2:1e2:5", repeats=1, mode="walking", at="1,3")
    by_node = wn_onnx.check(report, point_floors=[("re:^/2/Gemm$", 1e9)], min_mu=None)
    selected = [p.index for p in wn_onnx.find_points(wn_onnx.DEFAULT_MODEL, at="re:^/2/Gemm$")]
    assert selected == [1]
    assert [(v.name.split()[1], v.passed) for v in by_node] == [("1", False)]
