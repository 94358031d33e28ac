"""The CI gate: exit codes, JUnit content, baselines that tolerate noise but catch real drops."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import config_of, wn

from wn_onnx.engine import SweepSettings
from wn_onnx.gate import Policy, evaluate_policy, judge_drop
from wn_onnx.io.data import make_dataset
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL, digits_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.scanner import run_scan
from wn_onnx.training.export import export_onnx
from wn_onnx.training.trainer import TrainConfig, train

FAST = ["--sigmas", "log:1e-2:1e3:21", "--repeats", "3"]



def test_pass_fail_error_exit_codes_and_junit(tmp_path):
    ok = wn(
        "check",
        DEFAULT_MODEL,
        "--data",
        DEFAULT_DATA,
        "--min-mu",
        "0.1",
        *FAST,
        "--junit",
        tmp_path / "ok.xml",
        "--out",
        tmp_path / "r.json",
    )
    assert ok.returncode == 0, ok.stderr
    assert "wn-onnx check: passed" in ok.stdout and "| global |" in ok.stdout
    suite = ET.parse(tmp_path / "ok.xml").getroot()
    assert suite.get("tests") == "12" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 12 and any("global" in c.get("name") for c in suite.findall("testcase"))
    assert len(json.loads((tmp_path / "r.json").read_text())["verdicts"]) == 12

    bad = wn(
        "check",
        DEFAULT_MODEL,
        "--data",
        DEFAULT_DATA,
        "--min-mu",
        "0.9",
        *FAST,
        "--junit",
        tmp_path / "bad.xml",
        "--summary",
        tmp_path / "s.md",
    )
    assert bad.returncode == 1
    suite = ET.parse(tmp_path / "bad.xml").getroot()
    failures = [c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) >= 2
    assert any("global" in f.get("message") and "< min μ 0.9" in f.get("message") for f in failures)
    assert all("±" in f.get("message") for f in failures if "global" in f.get("message"))
    assert "FAILED" in (tmp_path / "s.md").read_text()

    err = wn(
        "check", tmp_path / "missing.onnx", "--data", DEFAULT_DATA, "--min-mu", "0.1", "--junit", tmp_path / "err.xml"
    )
    assert err.returncode == 2 and "model file not found" in err.stderr
    suite = ET.parse(tmp_path / "err.xml").getroot()
    assert suite.get("errors") == "1" and "model file not found" in suite.find("testcase/error").get("message")

    assert wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, *FAST).returncode == 2  # no policy given


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """The shipped model, and one trained briefly (a real robustness drop at most points)."""
    d = tmp_path_factory.mktemp("models")
    x_train, y_train, x_test, y_test = digits_split()
    weak, _ = train(
        TrainConfig("mlp", "digits", epochs=2, augment=False, seed=3),
        (x_train, y_train),
        (x_test, y_test),
        10,
        (1, 8, 8),
    )
    return DEFAULT_MODEL, export_onnx(weak, (1, 8, 8), d / "weak.onnx"), make_dataset(x_test, y_test, "digits")


def scan(path, data, seed):
    return run_scan(
        load_model(path), data, config_of(SweepSettings(parse_grid("log:1e-2:1e3:31"), NoiseSpec("add"), 4, seed))
    )


def test_baseline_passes_within_error_and_fails_a_real_drop(two_models):
    good, weak, data = two_models
    base = scan(good, data, seed=0)
    again = scan(good, data, seed=1)  # the same model, other noise draws: within error
    verdicts = evaluate_policy(again, Policy(max_drop=0.0), base)
    assert all(v.passed for v in verdicts), [v.message for v in verdicts if not v.passed]
    worse = scan(weak, data, seed=0)
    drops = [(b["mu"] - w["mu"]) / b["mu"] for b, w in zip(base["points"], worse["points"], strict=True)]
    assert np.mean(drops) > 0.3, drops  # the weak model really is less robust
    verdicts = evaluate_policy(worse, Policy(max_drop=0.2), base)
    assert sum(not v.passed for v in verdicts) >= 3
    assert any("drop" in v.message and "baseline" in v.message for v in verdicts if not v.passed)


def test_drop_rule_uses_combined_error():
    base = {"mu": 1.0, "mu_err": 0.05, "status": "ok"}
    assert judge_drop("p", base, {"mu": 0.75, "mu_err": 0.05, "status": "ok"}, 0.2).passed  # 25% drop, 2σ slack = 0.14
    assert not judge_drop("p", base, {"mu": 0.6, "mu_err": 0.05, "status": "ok"}, 0.2).passed


def test_label_free_mu_close_to_labelled(two_models):
    good, _, data = two_models
    st = SweepSettings(parse_grid("log:1e-2:1e3:31"), NoiseSpec("add"), 4)
    labelled = run_scan(load_model(good), data, config_of(st, dict(mode="global")))
    free = run_scan(
        load_model(good), make_dataset(data.x, None, "unlabelled"), config_of(st, dict(mode="global", label_free=True))
    )
    assert free["clean_accuracy"] == 1.0 and free["data"]["label_free"]
    g, f = labelled["global"], free["global"]
    assert abs(g["mu"] - f["mu"]) <= 0.1 * g["mu"] + 2 * np.hypot(g["mu_err"], f["mu_err"]), (g["mu"], f["mu"])


def test_toml_thresholds_per_pattern_and_unknown_keys(tmp_path):
    (tmp_path / "wn-onnx.toml").write_text(  # the data named in the config (was: no key for it)
        f'data = "{DEFAULT_DATA}"\nnoise = "add"\nsigmas = "log:1e-2:1e3:21"\nrepeats = 3\nmin_mu = 0.1\n'
        '[points]\n"op:Gemm" = 3.0\n'
    )
    res = wn("check", DEFAULT_MODEL, "--junit", "j.xml", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    failed = [
        c.get("name")
        for c in ET.parse(tmp_path / "j.xml").getroot().findall("testcase")
        if c.find("failure") is not None
    ]
    assert failed and all("Gemm" in f or "logits" in f for f in failed) and all("min μ 3" in f for f in failed)
    (tmp_path / "pyproject.toml").write_text('[tool.wn-onnx]\nmin_mu = 0.1\ncolour = "blue"\n')
    (tmp_path / "wn-onnx.toml").unlink()
    res = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, cwd=tmp_path)
    assert res.returncode == 2 and "unknown key(s) colour" in res.stderr
    (tmp_path / "bad.toml").write_text("min_mu = [")
    res = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--config", tmp_path / "bad.toml")
    assert res.returncode == 2 and "malformed TOML" in res.stderr


def test_baseline_from_another_model_is_refused(tmp_path):
    point = {"index": 0, "tensor": "elsewhere", "op_type": "Conv", "shape": [1], "sigmas": [0.1], "accuracy": [[0.9]],
             "mu": 1.0, "mu_err": 0.1, "a_max": 0.9, "a_min": 0.1, "status": "ok"}  # fmt: skip
    report = {"schema_version": 1, "model": "other.onnx", "noise": {"kind": "add"}, "seed": 0, "clean_accuracy": 0.9, "num_classes": 10,
              "points": [point], "global": None}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps(report))
    res = wn(
        "check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--baseline", tmp_path / "b.json", "--max-mu-drop", "20%", *FAST
    )
    assert res.returncode == 2 and "another model" in res.stderr
