"""Hostile input everywhere gets one clear line and exit 2; fuzzing the noise pass and the fit;
interrupted scans resume to the same report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import like_a_shell, wn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.graph_passes import InsertNoisePass, find_points
from wn_onnx.noise import NoiseSpec
from wn_onnx.results.fit import fit_curve
from wn_onnx.results.schema import STATUSES


def one_line_exit_2(res: subprocess.CompletedProcess, message: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def small_model(path, input_type=TensorProto.FLOAT, dims=("N", 4), external: str | None = None):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    if external:
        w.data_location = TensorProto.EXTERNAL
        w.ClearField("raw_data")
        w.external_data.add(key="location", value=external)
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", input_type, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_hostile_corpus(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 48)
    inner = tmp_path / "models"
    inner.mkdir()
    escape = small_model(inner / "escape.onnx", external="../secret.bin")
    absolute = small_model(inner / "absolute.onnx", external=str(tmp_path / "secret.bin"))
    int_input = small_model(tmp_path / "int.onnx", input_type=TensorProto.INT64)
    text_input = small_model(tmp_path / "text.onnx", input_type=TensorProto.STRING)
    np.savez(tmp_path / "half.npz", x=np.full((5, 4), 0.5, np.float32), y=np.zeros(5, np.int64))
    huge = small_model(tmp_path / "huge.onnx", dims=("N", 10**12))
    good = small_model(tmp_path / "good.onnx")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "four.npz", x=np.ones((5, 4), np.float32), y=np.zeros(5, np.int64))
    np.savez(tmp_path / "inf.npz", x=np.full((5, 4), np.inf, np.float32), y=np.zeros(5, np.int64))
    (tmp_path / "r.json").write_text('{"points": [')
    cases = [
        (["scan", escape, "--data", tmp_path / "four.npz"], "refusing external data '../secret.bin'"),
        (["points", absolute], "refusing external data"),
        (["scan", text_input, "--data", tmp_path / "four.npz"], "not a float or integer tensor"),
        (
            ["scan", int_input, "--data", tmp_path / "half.npz"],
            "the model takes integers (int64), but x holds fractional",
        ),
        (["scan", huge, "--data", tmp_path / "four.npz"], "the model expects 1000000000000"),
        (["scan", good, "--data", tmp_path / "empty.npz"], "holds no samples"),
        (["scan", good, "--data", tmp_path / "inf.npz"], "contain NaN or Inf"),
        (["plan", tmp_path / "r.json"], "not a JSON report"),
        (
            ["check", good, "--data", tmp_path / "four.npz", "--baseline", tmp_path / "r.json", "--max-mu-drop", "5%"],
            "not a JSON report",
        ),
        (["analyze", "weights", escape], "refusing external data"),
        (["scan", good, "--data", tmp_path / "four.npz", "--repeats", "abc"], "Invalid value for '--repeats'"),
    ]
    for args, message in cases:
        one_line_exit_2(wn(*args), message)


def test_huge_multiplicative_sigma_counts_nan_and_keeps_statuses(tmp_path):
    out = tmp_path / "r.json"
    res = wn("scan", "--noise", "mul", "--sigmas", "log:1:1e10:11", "--repeats", "2", "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    for curve in [*report["points"], report["global"]]:
        assert curve["status"] in STATUSES
        lo, hi = min(curve["sigmas"]), max(curve["sigmas"])
        if curve["status"] == "ok":  # a fitted μ inside the measured range, with its error
            assert lo <= curve["mu"] <= hi and curve["mu_err"] is not None and curve["mu_err"] >= 0
        if curve["status"] == "not-reached":  # a lower bound: the largest σ measured
            assert curve["mu"] == hi
    assert sum(map(sum, report["global"]["nonfinite"])) > 0


# ---------------------------------------------------------------- fuzzing
UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Softmax"]


@st.composite
def random_graphs(draw):
    width = draw(st.integers(2, 6))
    ops = draw(st.lists(st.sampled_from([*UNARY, "MatMul", "AddConst", "MulConst"]), min_size=1, max_size=6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes, inits, prev = [], [], "x"
    for i, op in enumerate(ops):
        out = f"t{i}"
        if op == "MatMul":
            inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}"))
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        elif op in ("AddConst", "MulConst"):
            inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"c{i}"))
            nodes.append(helper.make_node(op[:3], [prev, f"c{i}"], [out]))
        else:
            nodes.append(helper.make_node(op, [prev], [out]))
        prev = out
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", width])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), width


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    random_graphs(), st.sampled_from([NoiseSpec("add"), NoiseSpec("mul"), NoiseSpec("mixed", "add-first", ratio=0.5)])
)
def test_fuzz_noise_pass_is_identity_at_sigma_zero(case, spec):
    proto, width = case
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    points = find_points(model)
    InsertNoisePass([p.tensor for p in points], spec, source="drawn")(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = np.random.default_rng(0).standard_normal((3, width)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    feeds = {"x": x}
    if spec.kind != "mul":
        feeds["wn_sigma_add"] = np.zeros(len(points), np.float32)
    if spec.kind != "add":
        feeds["wn_sigma_mul"] = np.zeros(len(points), np.float32)
    got = ort.InferenceSession(ir.to_proto(model).SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    assert np.array_equal(ref, got)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=3, max_size=30),
    st.integers(1, 5),
    st.sampled_from([2, 10, 12]),
    st.booleans(),
    st.integers(0, 2**16),
)
@pytest.mark.slow
def test_fuzz_fit_never_crashes_and_ok_mu_lies_in_grid(levels, repeats, classes, log_grid, seed):
    rng = np.random.default_rng(seed)
    sigma = np.geomspace(1e-2, 1e4, len(levels)) if log_grid else np.linspace(0, 2, len(levels))
    acc = np.clip(np.asarray(levels)[:, None] + rng.normal(0, 0.02, (len(levels), repeats)), 0, 1)
    res = fit_curve(sigma, acc, 1.0 / classes, int(rng.integers(10, 10000)))
    assert res.status in STATUSES and res.status != "failed"  # failed is the engine's, never the fit's
    if res.status == "ok":
        assert sigma.min() <= res.mu <= sigma.max() and res.mu_err is not None and np.isfinite(res.mu_err)


# ---------------------------------------------------------------- interrupts
SLOW = ["scan", "--mode", "walking", "--sigmas", "log:1e-2:1e3:25", "--repeats", "30", "--quiet"]


def stored_curves(db) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM curves").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_until_stored(args, db, count: int, sig: int, tmp_path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "wn_onnx", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=like_a_shell)  # fmt: skip
    deadline = time.time() + 120
    while stored_curves(db) < count and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the scan finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "ref.json"
    assert wn(*SLOW, "--out", reference).returncode == 0
    out = tmp_path / "r.json"
    db = tmp_path / "r.json.sqlite"
    proc = run_until_stored([*SLOW, "--out", out], db, 3, signal.SIGKILL, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    kept = stored_curves(db)
    assert 3 <= kept < 11 and not out.exists()
    res = wn(*SLOW, "--out", out, "--resume")
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert stored_curves(db) == 11  # every point exactly once


@pytest.mark.slow
def test_ctrl_c_writes_a_partial_report(tmp_path):
    out = tmp_path / "r.json"
    proc = run_until_stored([*SLOW, "--out", out], tmp_path / "r.json.sqlite", 2, signal.SIGINT, tmp_path)
    assert proc.returncode == 130, proc.stderr.read()
    report = json.loads(out.read_text())
    assert report["partial"] is True and 2 <= len(report["points"]) < 11
    assert "--resume" in proc.stderr.read()


def test_resume_needs_out():
    one_line_exit_2(wn("scan", "--resume"), "--resume needs --out")


pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals")
