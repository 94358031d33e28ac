"""A point that cannot be evaluated fails alone: recorded with status ``failed`` and a reason,
shown on the terminal, failed by ``check``; the other points are measured as without it. And a
batch declared ``dim_value: -1`` (PaddlePaddle's exporter) is a free batch, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import config_of, wn
from corpus import MLP, declare_batch, export
from typer.testing import CliRunner

from wn_onnx.cli.app import app
from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.gate import judge_floor
from wn_onnx.io.data import load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.results.schema import schema_problems
from wn_onnx.scanner import run_scan

GRID = "log:1e-2:1e3:11"
BROKEN = 2


@pytest.fixture
def broken_point(monkeypatch):
    """Point BROKEN cannot be walked (as an onnxruntime failure on one suffix would make it)."""
    walk = Engine.walk

    def failing(self, point, *args, **kwargs):
        if point.index == BROKEN:
            raise WnError("onnxruntime failed on the data: Got invalid dimensions for input: h\nsecond line")
        return walk(self, point, *args, **kwargs)

    monkeypatch.setattr(Engine, "walk", failing)


def scan(at: str) -> dict:
    data = load_npz(DEFAULT_DATA, limit=200)
    st = SweepSettings(parse_grid(GRID), NoiseSpec("add"), repeats=2, batch_size=100)
    return run_scan(load_model(DEFAULT_MODEL), data, config_of(st, dict(mode="walking", at=at)))


def test_a_failing_point_leaves_the_others_as_they_were(broken_point):
    report = scan("0-4")
    failed = [p for p in report["points"] if p["status"] == "failed"]
    assert [p["index"] for p in failed] == [BROKEN]
    assert (
        failed[0]["mu"] is None
        and failed[0]["reason"] == "onnxruntime failed on the data: Got invalid dimensions for input: h"
    )
    assert failed[0]["fit"]["note"] == failed[0]["reason"] and not schema_problems(report)
    verdict = judge_floor("point 2", failed[0], 0.1)
    assert not verdict.passed and "not evaluated" in verdict.message and "invalid dimensions" in verdict.message


def test_others_match_a_scan_without_the_failure(broken_point, monkeypatch):
    broken = {p["index"]: p["mu"] for p in scan("0-4")["points"]}
    monkeypatch.undo()
    plain = {p["index"]: p["mu"] for p in scan("0-4")["points"]}
    assert broken.pop(BROKEN) is None
    assert broken == {i: mu for i, mu in plain.items() if i != BROKEN}


def test_every_point_failing_is_an_error(broken_point):
    with pytest.raises(WnError, match="every walked point failed; point 2: onnxruntime failed"):
        scan(str(BROKEN))


def test_failed_point_on_the_terminal(broken_point):
    args = ["scan", str(DEFAULT_MODEL), "--data", str(DEFAULT_DATA), "--mode", "walking", "--at", "1-3",
            "--sigmas", GRID, "--repeats", "2", "--limit", "200", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "point 2 (" in result.output and "failed: onnxruntime failed on the data" in result.output


@pytest.fixture(scope="module")
def minus_one(tmp_path_factory):
    """An MLP whose input and output batch are declared -1, and data for it."""
    folder = tmp_path_factory.mktemp("minus_one")
    path = declare_batch(export(MLP(), (12,), folder / "mlp.onnx"), -1, folder / "paddle_like.onnx")
    x = np.random.default_rng(0).standard_normal((150, 12)).astype(np.float32)
    engine = Engine(load_model(path), ["CPUExecutionProvider"])
    np.savez(folder / "data.npz", x=x, y=engine.clean_logits(x).argmax(axis=1))
    return path, folder / "data.npz"



def test_batch_declared_minus_one_is_free(minus_one, tmp_path):
    path, data = minus_one
    assert load_model(path).fixed_batch is None
    res = wn("scan", path, "--data", data, "--sigmas", GRID, "--repeats", "2", "--out", tmp_path / "r.json", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "-1 samples" not in res.stdout + res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data"]["samples"] == 150 and all(p["status"] != "failed" for p in report["points"])
    res = wn("check", path, "--data", data, "--sigmas", GRID, "--repeats", "2", "--min-mu", "1e-3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wn-onnx check: passed" in res.stdout


def test_fp16_overflow_is_counted_not_printed(tmp_path):
    """Large σ overflow float16: counted in ``nonfinite``, no numpy warning on the terminal."""
    path = export(MLP(), (12,), tmp_path / "fp16.onnx", half=True)
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((60, 12)).astype(np.float16))
    args = ["--data", tmp_path / "x.npz", "--label-free", "--repeats", "2", "--sigmas", "log:1e-2:1e8:6"]
    res = wn("scan", path, *args, "--out", tmp_path / "r.json", "--quiet")
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert sum(np.sum(p["nonfinite"]) for p in report["points"]) > 0
