"""Guided multi-execution: rounding, averaged noise in the graph, and what plans buy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from conftest import config_of, wn
from onnx import TensorProto, helper

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.graph_passes import InsertNoisePass, find_points, z_input_names
from wn_onnx.io.data import load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.planner import greedy, inverse_mu, uniform
from wn_onnx.scanner import run_scan


def test_table3_mnist_mlp_plan_is_reproduced():
    target = np.array([6, 1, 3, 3, 2, 1, 2, 1, 1, 1, 1])
    assert inverse_mu(1.0 / target, 22).tolist() == target.tolist()
    assert inverse_mu(0.37 / target, 22).tolist() == target.tolist()  # only proportions matter


def test_rounding_properties_on_random_profiles():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(2, 20))
        mu = rng.lognormal(0, 1.5, n)
        budget = int(rng.integers(n, 5 * n))
        plan = inverse_mu(mu, budget)
        assert plan.sum() == budget and plan.min() >= 1
        order = np.argsort(mu)  # smaller μ (more sensitive) never gets fewer executions
        assert np.all(np.diff(plan[order]) <= 0), (mu, plan)
    robust = np.array([False, True, False])
    assert inverse_mu(np.array([0.1, 0.01, 1.0]), 9, robust)[1] == 1
    assert uniform(4, 10).tolist() == [3, 3, 2, 2]


def averaging_model(n: int = 20000) -> ir.Model:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )  # fmt: skip
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


@pytest.mark.parametrize("kind", ["add", "mul"])
@pytest.mark.parametrize("executions", [1, 4, 9])
@pytest.mark.parametrize("source", ["drawn", "fed"])
def test_averaged_noise_spread_is_sigma_over_sqrt_n(kind, executions, source):
    model = averaging_model()
    spec = NoiseSpec(kind)
    InsertNoisePass(["y"], spec, source=source, repetitions=[executions])(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    c, sigma = 2.0, 0.6
    x = np.full((2, 20000), c, np.float32)
    feeds = {"x": x, f"wn_sigma_{kind}": np.array([sigma], np.float32)}
    if source == "fed":
        feeds[z_input_names(0, spec)[0]] = (
            np.random.default_rng(1).standard_normal((executions, *x.shape)).astype(np.float32)
        )
    y = session.run(None, feeds)[0]
    expected = sigma / np.sqrt(executions) * (c if kind == "mul" else 1.0)
    assert abs(y.std() / expected - 1) < 0.03
    assert abs(y.mean() - c) < 5 * expected / np.sqrt(y.size)


@pytest.fixture(scope="module")
def digits_report():
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    st = SweepSettings(default_grid(NoiseSpec("add")), NoiseSpec("add"), repeats=3)
    return loaded, data, run_scan(loaded, data, config_of(st, dict(mode="both")))


@pytest.mark.slow
def test_guided_beats_uniform_and_greedy_keeps_up(digits_report):
    loaded, data, report = digits_report
    engine = Engine(loaded, ["CPUExecutionProvider"])
    points = find_points(loaded.model)
    mu = np.array([p["mu"] for p in report["points"]])
    level = report["global"]["mu"]

    def acc(plan, seed=0, repeats=30):
        return engine.plan_accuracy(points, NoiseSpec("add"), level, plan, data, repeats, seed)

    uni, inv = acc(uniform(11, 22)), acc(inverse_mu(mu, 22))
    # the same draws for both plans: a paired comparison
    diff = inv - uni
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff)) and diff.mean() > 0.02, (uni.mean(), inv.mean())
    plan, steps = greedy(11, 22, lambda p: float(acc(p, seed=1, repeats=6).mean()))
    assert plan.sum() == 22 and len(steps) == 11
    gre = acc(plan)
    gap = gre - inv
    assert gap.mean() > -3 * gap.std(ddof=1) / np.sqrt(len(gap)) - 0.01, (gre.mean(), inv.mean())



def test_plan_cli_json_and_apply(tmp_path, digits_report):
    _loaded, data, report = digits_report
    rpath = tmp_path / "r.json"
    rpath.write_text(json.dumps(report))
    res = wn("plan", rpath, "--budget", "22", "--json", "--out", tmp_path / "plan.json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["strategy"] == "inverse-mu" and plan["budget"] == 22 and sum(plan["executions"]) == 22
    assert [p["index"] for p in plan["points"]] == list(range(11)) and plan["points"][0]["tensor"] == "input"
    res = wn("apply-plan", DEFAULT_MODEL, tmp_path / "plan.json", "--out", tmp_path / "multi.onnx")
    assert res.returncode == 0, res.stderr
    proto = onnx.load(str(tmp_path / "multi.onnx"))
    onnx.checker.check_model(proto)
    assert {i.name for i in proto.graph.input} == {"input", "wn_sigma_add"}
    s = ort.InferenceSession(str(tmp_path / "multi.onnx"), providers=["CPUExecutionProvider"])
    clean = ort.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": data.x})[0]
    quiet = s.run(None, {"input": data.x, "wn_sigma_add": np.zeros(11, np.float32)})[0]
    np.testing.assert_allclose(quiet, clean, rtol=1e-5, atol=1e-5)


def test_apply_plan_keeps_the_users_graph(tmp_path):
    """Was: apply-plan saved the copy prepared for scanning (other outputs dropped, a built-in batch
    freed). The deployable model keeps every output and the declared input shape."""
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return self.head(h), h

    torch.manual_seed(0)
    path = tmp_path / "two.onnx"
    torch.onnx.export(TwoHeads().eval(), (torch.randn(4, 6),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits", "features"])  # fmt: skip  (batch 4 built in)
    plan = {"points": [{"index": 1, "tensor": find_points(load_model(path).model)[1].tensor}], "executions": [3],
            "noise": {"kind": "add", "order": None}}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    res = wn("apply-plan", path, tmp_path / "plan.json", "--out", tmp_path / "multi.onnx")
    assert res.returncode == 0, res.stderr
    proto = onnx.load(str(tmp_path / "multi.onnx"))
    assert [o.name for o in proto.graph.output] == ["logits", "features"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [4, 6]
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ort.InferenceSession(str(tmp_path / "multi.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "wn_sigma_add": np.zeros(1, np.float32)})  # fmt: skip
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_plan_bad_input(tmp_path, digits_report):
    _, _, report = digits_report
    rpath = tmp_path / "r.json"
    rpath.write_text(json.dumps(report))
    other = json.loads(json.dumps(report))
    other["points"][3]["tensor"] = "something_else"
    opath = tmp_path / "other.json"
    opath.write_text(json.dumps(other))
    (tmp_path / "bad.json").write_text("{not json")
    cases = [
        (["plan", rpath, "--budget", "5"], "below the number of points (11)"),
        (["plan", rpath, "--budget", "22.5"], "whole number"),
        (["plan", rpath, "--budget", "lots"], "whole number"),
        (["plan", tmp_path / "bad.json"], "not a JSON report"),
        (["plan", opath, "--evaluate", "--model", DEFAULT_MODEL, "--data", DEFAULT_DATA], "does not describe"),
        (["plan", rpath, "--strategy", "greedy"], "need --model and --data"),
        (
            [
                "plan",
                rpath,
                "--evaluate",
                "--strategies",
                "uniform,best",
                "--model",
                DEFAULT_MODEL,
                "--data",
                DEFAULT_DATA,
            ],
            "--strategies",
        ),
        (["plan", rpath, "--strategy", "random"], "Invalid value for '--strategy'"),
    ]
    for args, message in cases:
        res = wn(*args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1


def chain_model(path, width: int = 6, layers: int = 11):
    """input → (MatMul, Relu) × layers: 1 + 2·layers noise points (23 by default), tiny and fast."""
    rng = np.random.default_rng(0)
    nodes, inits, h = [], [], "x"
    for i in range(layers):
        w = (np.eye(width) + 0.1 * rng.standard_normal((width, width))).astype(np.float32)
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        out = "logits" if i == layers - 1 else f"r{i}"
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [out])]
        h = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", width])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def synthetic_report(model_path, classes: int = 6) -> dict:
    """A scan report for ``model_path`` with made-up μ (planning needs only the points and μ)."""
    points = find_points(load_model(model_path).model)
    curve = {
        "sigmas": [0.1, 1.0],
        "accuracy": [[1.0], [0.2]],
        "mu_err": 0.01,
        "a_max": 1.0,
        "a_min": 0.2,
        "status": "ok",
    }
    return {
        "schema_version": 1, "model": str(model_path), "noise": {"kind": "add", "order": None}, "seed": 0, "clean_accuracy": 1.0,
        "num_classes": classes, "global": None,
        "points": [{"index": p.index, "tensor": p.tensor, "op_type": p.op_type, "shape": None, "mu": 0.2 + 0.1 * (p.index % 5),
                    **curve} for p in points],
    }  # fmt: skip


def test_plan_evaluate_on_a_model_with_many_points_finishes(tmp_path):
    model = chain_model(tmp_path / "chain.onnx")
    report = synthetic_report(model)
    assert len(report["points"]) == 23
    (tmp_path / "r.json").write_text(json.dumps(report))
    x = np.random.default_rng(1).standard_normal((60, 6)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    common = ["plan", tmp_path / "r.json", "--evaluate", "--model", model, "--data", tmp_path / "d.npz", "--sigma", "0.3",
              "--repeats", "3", "--threads", "1", "--batch-size", "16", "--limit", "40"]  # fmt: skip
    res = wn(*common, "--json")
    assert res.returncode == 0, res.stderr
    plans = json.loads(res.stdout)["evaluation"]["plans"]
    assert set(plans) == {"uniform", "inverse-mu"}  # greedy measures 1 + points × extra plans: only when asked
    assert "greedy" not in res.stderr
    res = wn(*common, "--strategies", "greedy,uniform", "--budget", "25", "--strategy", "greedy", "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert set(payload["evaluation"]["plans"]) == {"greedy", "uniform"} and sum(payload["executions"]) == 25
    assert len(payload["greedy_steps"]) == 2 and "greedy: 47 plan evaluations" in res.stderr
    res = wn(*common, "--strategies", "uniform")  # the table view, with the progress bar on stderr
    assert res.returncode == 0 and "plans" in res.stderr and "uniform" in res.stdout, res.stderr


def test_plan_evaluate_takes_a_dataset(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(synthetic_report(DEFAULT_MODEL, 10)))
    common = ["plan", tmp_path / "r.json", "--evaluate", "--model", DEFAULT_MODEL, "--sigma", "0.5", "--repeats", "2",
              "--strategies", "uniform", "--limit", "60", "--json"]  # fmt: skip
    a = wn(*common, "--data", DEFAULT_DATA)
    b = wn(*common, "--dataset", "digits")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    acc = [json.loads(r.stdout)["evaluation"]["plans"]["uniform"]["accuracy"] for r in (a, b)]
    assert acc[0] == acc[1] and 0 < min(acc[0])


def test_a_not_reached_curve_that_fell_is_planned_at_its_bound_not_as_robust():
    """`not-reached` says μ > the largest σ; a curve that fell on the way (but not to the midpoint)
    is no evidence of robustness: it is planned at that bound, a flat one gets 1 execution."""
    from wn_onnx.planner import PlanInput

    def point(i: int, low: float) -> dict:
        return {"index": i, "tensor": f"t{i}", "status": "not-reached", "mu": 10.0, "mu_err": None,
                "a_max": 0.9, "a_min": 0.1, "accuracy": [[0.9, 0.9], [low, low]], "fit": {}}  # fmt: skip

    inp = PlanInput.from_report({"points": [point(0, 0.9), point(1, 0.6), {**point(2, 0.2), "status": "ok", "mu": 5.0}]})
    assert inp.robust.tolist() == [True, False, False]
    assert inp.mu[1] == 10.0 and "fell" in inp.flags[1]
    executions = inverse_mu(inp.mu, 12, inp.robust)
    assert executions[0] == 1 and executions[1] > 1 and executions[2] > executions[1]
