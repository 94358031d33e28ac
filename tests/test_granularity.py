"""Layer granularity, points inside control flow and relative σ (issue #16), each against an
independent computation: the plain reference evaluator (tests/reference.py) with noise put at
the tensor by hand, a flat copy of a branch, or numpy's std of the clean activation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import config_of
from onnx import TensorProto, helper, numpy_helper
from reference import Reference
from torch import nn
from typer.testing import CliRunner

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.engine.draws import GLOBAL_STREAM, WALK_STREAM
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import make_dataset
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.scanner import run_scan
from wn_onnx.training.export import export_onnx
from wn_onnx.training.nets import build

CPU = ["CPUExecutionProvider"]


def listed(*args: object) -> list[dict]:
    """``wn-onnx points ARGS --json``, in this process."""
    from wn_onnx.cli.app import app

    result = CliRunner().invoke(app, ["points", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["points"]


class Block(nn.Module):
    """A transformer encoder block (GELU, LayerNorm) and a classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x).mean(1))


class Act(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.f1, self.act, self.f2 = nn.Linear(12, 16), act, nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f2(self.act(self.f1(x)))


class ManualSoftmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x - x.amax(-1, keepdim=True))
        return e / e.sum(-1, keepdim=True)


class GeluThenNorm(nn.Module):
    """GELU then LayerNorm: two functions back to back, never one point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(nn.functional.gelu(x), (16,))


def export(model: nn.Module, shape: tuple[int, ...], path: Path, opset: int = 17) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(2, *shape),), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          do_constant_folding=False)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def block(tmp_path_factory) -> dict[int, Path]:
    """The block exported at opset 17 (LayerNormalization op) and 14 (LayerNorm as nine ops)."""
    torch.manual_seed(0)
    net, folder = Block(), tmp_path_factory.mktemp("block")
    return {opset: export(net, (6, 16), folder / f"block{opset}.onnx", opset) for opset in (14, 17)}


def labels(points) -> list[str]:
    return [p.op_type for p in points]


def test_points_cli_lists_each_gelu_and_layernorm_once(block):
    for opset, norm in ((17, ["LayerNormalization"]), (14, ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt",
                                                             "Div", "Mul", "Add"])):  # fmt: skip
        points = listed(block[opset], "--granularity", "layer")
        ops = [p["op_type"] for p in points]
        gelu = [p for p in points if p["op_type"] == "Gelu"]
        assert len(gelu) == 1 and gelu[0]["ops"] == ["Div", "Erf", "Add", "Mul", "Mul"], points
        norms = [p for p in points if p["op_type"] in ("LayerNorm", "LayerNormalization")]
        assert len(norms) == 2 and all(p.get("ops", [p["op_type"]]) == norm for p in norms), points
        assert ops.count("MatMul") == 5 and "Erf" not in ops and "Sqrt" not in ops, ops  # linear layers: MatMul+Add
        assert len(points) == 17, ops
        op_level = find_points(load_model(block[opset]).model, "op")
        assert len(op_level) == {17: 24, 14: 40}[opset]
    assert len(listed(block[14], "--granularity", "op")) == 40


@pytest.mark.parametrize(
    ("act", "opset", "label", "ops"),
    [
        (nn.Hardswish(), 17, "HardSwish", ()),
        (nn.Hardswish(), 13, "HardSwish", ("HardSigmoid", "Mul")),
        (nn.Hardsigmoid(), 17, "HardSigmoid", ()),
        (nn.SiLU(), 17, "SiLU", ("Sigmoid", "Mul")),
        (nn.GELU(approximate="tanh"), 17, "Gelu", ("Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul")),
        (nn.Softmax(-1), 17, "Softmax", ()),
        (ManualSoftmax(), 17, "Softmax", ("ReduceMax", "Sub", "Exp", "ReduceSum", "Div")),
    ],
)
def test_activation_is_one_point(tmp_path, act, opset, label, ops):
    points = find_points(load_model(export(Act(act), (12,), tmp_path / "m.onnx", opset)).model, "layer")
    assert labels(points) == ["Input", "Gemm", label, "Gemm"]
    assert points[2].ops == ops


def test_two_functions_stay_two_points(tmp_path):
    points = find_points(load_model(export(Act(GeluThenNorm()), (12,), tmp_path / "m.onnx", 14)).model, "layer")
    assert labels(points) == ["Input", "Gemm", "Gelu", "LayerNorm", "Gemm"]


@pytest.mark.parametrize(("arch", "shape", "count"), [("mlp", (1, 28, 28), 11), ("lenet5", (3, 32, 32), 16)])
def test_paper_models_keep_their_points(tmp_path, arch, shape, count):
    torch.manual_seed(1)
    model = load_model(export_onnx(build(arch, shape, 10, bn=True).eval(), shape, tmp_path / "m.onnx")).model
    op, layer = find_points(model, "op"), find_points(model, "layer")
    assert len(op) == count and layer == op


def _data(engine: Engine, x: np.ndarray):
    """``x`` labelled with the clean model's predictions."""
    y = engine.clean_logits(x).reshape(len(x), -1).argmax(axis=1)
    return make_dataset(x, y, "test")


def test_layer_walk_equals_reference(block):
    """Noise at the output of the nine-op LayerNorm and of the GELU, walked by the engine (its
    suffix after the point), equals the reference evaluator's noise put at that tensor by hand."""
    loaded = load_model(block[14])
    engine = Engine(loaded, CPU)
    data = _data(engine, np.random.default_rng(0).standard_normal((40, 6, 16)).astype(np.float32))
    sigmas = np.array([0.1, 1.0, 3.0])
    st = SweepSettings(sigmas, NoiseSpec("add"), repeats=2, batch_size=16)
    reference = Reference(block[14])
    points = find_points(loaded.model, "layer")
    chosen = [p for p in points if p.op_type in ("LayerNorm", "Gelu")]
    assert len(chosen) == 3
    for point in chosen:
        fast = engine.walk(point, data, st, lambda _n: None).correct
        ref = reference.counts([(point.index, point.tensor)], data.x, data.y, sigmas, st.spec, 2, 0, WALK_STREAM, 16)
        assert np.abs(fast - ref).max() <= 1, (point, fast.tolist(), ref.tolist())
        assert fast[-1].sum() < 0.8 * fast[0].sum()  # σ = 3 is past the drop: the match is not trivial
        engine.release(point)
    fast = engine.global_sweep(points, data, st, lambda _n: None).correct
    ref = reference.counts([(p.index, p.tensor) for p in points], data.x, data.y, sigmas, st.spec, 2, 0,
                           GLOBAL_STREAM, 16)  # fmt: skip
    assert np.abs(fast - ref).max() <= 1, (fast.tolist(), ref.tolist())


W1 = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
W2 = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)


def _network(prefix: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", ["x", "W1"], [f"{prefix}h"]),
        helper.make_node("Relu", [f"{prefix}h"], [f"{prefix}r"]),
        helper.make_node("MatMul", [f"{prefix}r", "W2"], ["y" if prefix == "" else f"{prefix}o"]),
    ]


def _write(nodes: list, inits: list, path: Path, outputs: int) -> Path:
    """A checked opset-17 model x [N, 8] → y [N, ``outputs``] saved at ``path``."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _save(nodes: list, path: Path, extra: list | None = None) -> Path:
    return _write(nodes, [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2"), *(extra or [])], path, 4)


def if_model(path: Path) -> Path:
    """A VAD-like graph: the network lives in the then-branch of an If on max(x) > -100 (always
    true on the test data); the else-branch is another MatMul."""
    then = helper.make_graph(
        _network("t_"), "then", [], [helper.make_tensor_value_info("t_o", TensorProto.FLOAT, None)]
    )
    other = helper.make_graph([helper.make_node("MatMul", ["x", "W3"], ["e_o"])], "else", [],
                              [helper.make_tensor_value_info("e_o", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "threshold"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="If_0"),
    ]
    extra = [numpy_helper.from_array(np.ones((8, 4), np.float32), "W3"),
             numpy_helper.from_array(np.array(-100.0, np.float32), "threshold")]  # fmt: skip
    return _save(nodes, path, extra)


def test_if_branch_points_are_listed_and_walked(tmp_path):
    """Points inside the If are listed with their path; walking one and the global sweep over all
    of them equal the reference evaluator on the same network written without the If (the
    branch taken), its values named as in the branch."""
    path = if_model(tmp_path / "if.onnx")
    flat = _save(
        [*[n for n in _network("t_")[:2]], helper.make_node("MatMul", ["t_r", "W2"], ["y"])], tmp_path / "flat.onnx"
    )
    loaded = load_model(path)
    points = find_points(loaded.model, "layer")
    inner = [(p.tensor, p.op_type, p.path) for p in points if p.path]
    assert inner == [("e_o", "MatMul", "If_0/else_branch"), ("t_h", "MatMul", "If_0/then_branch"),
                     ("t_r", "Relu", "If_0/then_branch"), ("t_o", "MatMul", "If_0/then_branch")]  # fmt: skip
    assert not any(p.unsupported for p in points)
    assert [p.get("path") for p in listed(path) if p["tensor"] == "t_h"] == ["If_0/then_branch"]

    engine = Engine(loaded, CPU)
    data = _data(engine, np.random.default_rng(2).standard_normal((30, 8)).astype(np.float32))
    sigmas = np.array([0.3, 3.0, 30.0])
    st = SweepSettings(sigmas, NoiseSpec("add"), repeats=2, batch_size=16)
    reference = Reference(flat)
    taken = [p for p in points if p.tensor in ("t_h", "t_r")]
    for point in taken:
        fast = engine.walk(point, data, st, lambda _n: None).correct
        ref = reference.counts([(point.index, point.tensor)], data.x, data.y, sigmas, st.spec, 2, 0, WALK_STREAM, 16)
        assert np.array_equal(fast, ref), (point, fast.tolist(), ref.tolist())
    fast = engine.global_sweep(taken, data, st, lambda _n: None).correct
    ref = reference.counts([(p.index, p.tensor) for p in taken], data.x, data.y, sigmas, st.spec, 2, 0,
                           GLOBAL_STREAM, 16)  # fmt: skip
    assert np.array_equal(fast, ref) and fast[-1].sum() < fast[0].sum(), (fast.tolist(), ref.tolist())
    report = run_scan(loaded, data, config_of(st, dict(mode="global")))  # every point but the untaken branch's
    assert report["global"]["points"] == [p.index for p in points if p.tensor != "e_o"] and "skipped" not in report
    assert [p["tensor"] for p in report["not_run"]] == ["e_o"]


def cf_model(path: Path) -> Path:
    """Points before, at and after an If whose branches read an outer-scope value (``r``)."""
    rng = np.random.default_rng(0)
    w1, w2, w3 = (rng.standard_normal(s).astype(np.float32) for s in [(8, 16), (16, 6), (16, 6)])
    then = helper.make_graph([helper.make_node("MatMul", ["r", "W2"], ["t_o"])], "then", [],
                             [helper.make_tensor_value_info("t_o", TensorProto.FLOAT, None)])  # fmt: skip
    other = helper.make_graph([helper.make_node("MatMul", ["r", "W3"], ["e_o"])], "else", [],
                              [helper.make_tensor_value_info("e_o", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0), helper.make_node("Greater", ["m", "thr"], ["c"]),
             helper.make_node("If", ["c"], ["y0"], then_branch=then, else_branch=other, name="If_0"),
             helper.make_node("Add", ["y0", "b"], ["y"])]  # fmt: skip
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (w2, "W2"), (w3, "W3"), (np.float32(-100.0), "thr"),
                                                          (np.full(6, 0.1, np.float32), "b")]]  # fmt: skip
    return _write(nodes, inits, path, 6)


def quantized_agreement(path: Path, x: np.ndarray, names: list[str], bits: int) -> int:
    """Samples whose prediction survives b-bit quantisation (q = clip(round(v/s), −n, n)·s, n = 2^(b−1) − 1,
    s = max|clean v|/n) of the values ``names``, written into the graph with plain onnx edits: each
    value's producer (or the graph input) is renamed and Div/Round/Clip/Mul right after it recreate
    the value, so every reader, the If's branches included, reads it quantised; the whole graph run
    by onnxruntime."""
    import onnxruntime as ort

    probe = onnx.load(str(path))
    inner = [n for n in names if n not in ("x", "y")]
    probe.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inner])
    clean = ort.InferenceSession(probe.SerializeToString()).run(None, {"x": x})
    tops = {"x": np.abs(x).max(), "y": np.abs(clean[0]).max()} | {n: np.abs(v).max() for n, v in zip(inner, clean[1:], strict=True)}
    n = 2 ** (bits - 1) - 1
    model = onnx.load(str(path))
    g = model.graph
    for name in names:
        raw = f"{name}_raw"
        at = 0
        for i, node in enumerate(g.node):
            if name in node.output:
                node.output[:] = [raw if o == name else o for o in node.output]
                at = i + 1
        for value in g.input:
            value.name = raw if value.name == name else value.name
        g.initializer.extend([numpy_helper.from_array(np.float32(v), f"{name}_{k}")
                              for k, v in (("step", tops[name] / n), ("lo", -n), ("hi", n))])  # fmt: skip
        chain = [helper.make_node("Div", [raw, f"{name}_step"], [f"{name}_d"]), helper.make_node("Round", [f"{name}_d"], [f"{name}_r"]),
                 helper.make_node("Clip", [f"{name}_r", f"{name}_lo", f"{name}_hi"], [f"{name}_c"]),
                 helper.make_node("Mul", [f"{name}_c", f"{name}_step"], [name])]  # fmt: skip
        for k, node in enumerate(chain):
            g.node.insert(at + k, node)
    noisy = ort.InferenceSession(model.SerializeToString()).run(None, {"x_raw" if "x" in names else "x": x})[0]
    return int(np.sum(noisy.argmax(1) == clean[0].argmax(1)))


def test_numpy_models_walk_and_sweep_graphs_with_control_flow(tmp_path):
    """Quantisation (applied in numpy between graph runs) on a graph with an If whose branches read
    an outer-scope value: walking a point before the If and the global sweep over every top-level
    point equal the same quantisers written into the graph with plain onnx edits, run whole by
    onnxruntime, at every bit width; points inside the branches are skipped with their reason."""
    import wn_onnx

    path = cf_model(tmp_path / "cf.onnx")
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    bits = [2, 3, 4, 6, 8]
    report = wn_onnx.scan(str(path), str(tmp_path / "x.npy"), noise="quant", mode="both", label_free=True, levels=bits)
    assert [p.tensor for p in report.points] == ["x", "h", "r", "y0", "y"]
    assert [s["tensor"] for s in report.to_json()["skipped"]] == ["e_o", "t_o"]
    assert all("inside If_0/" in s["reason"] for s in report.to_json()["skipped"])
    walked = {p.tensor: p for p in report.points}
    for name in ("h", "r"):
        got = np.round(np.asarray(walked[name].accuracy)[:, 0] * len(x)).astype(int)
        levels = [bits.index(b) for b in sorted(bits, reverse=True)]  # the report's σ = 2^-b ascend: bits descend
        assert got.tolist() == [quantized_agreement(path, x, [name], bits[i]) for i in levels], name
    got = np.round(np.asarray(report.global_.accuracy)[:, 0] * len(x)).astype(int)
    every = ["x", "h", "r", "y0", "y"]
    assert got.tolist() == [quantized_agreement(path, x, every, b) for b in sorted(bits, reverse=True)]
    assert got[-1] < got[0]


def test_loop_body_points_are_skipped_with_their_reason(tmp_path):
    """A network inside a Loop body: its points are listed as not walkable; a scan reports them
    as skipped and walks the rest."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), *_network("b_")[:2],
         helper.make_node("MatMul", ["b_r", "W2"], ["b_o"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("b_o", TensorProto.FLOAT, None)],
    )  # fmt: skip
    nodes = [helper.make_node("Loop", ["trips", "keep"], ["stacked"], body=body, name="Loop_0"),
             helper.make_node("ReduceSum", ["stacked", "axis0"], ["y"], keepdims=0)]  # fmt: skip
    extra = [numpy_helper.from_array(np.array(2, np.int64), "trips"), numpy_helper.from_array(np.array(True), "keep"),
             numpy_helper.from_array(np.array([0]), "axis0")]  # fmt: skip
    path = _save(nodes, tmp_path / "loop.onnx", extra)
    loaded = load_model(path)
    points = find_points(loaded.model, "layer")
    inner = [p for p in points if p.path]
    assert [p.tensor for p in inner] == ["b_h", "b_r", "b_o"]
    assert all(p.path == "Loop_0/body" and "Loop body" in p.unsupported for p in inner)
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    data = _data(Engine(loaded, CPU), x)
    st = SweepSettings(np.array([0.1, 10.0]), NoiseSpec("add"), repeats=1, batch_size=20)
    report = run_scan(loaded, data, config_of(st))
    assert [p["tensor"] for p in report["skipped"]] == ["b_h", "b_r", "b_o"]
    assert all("Loop body" in p["reason"] for p in report["skipped"])
    assert {p["tensor"] for p in report["points"]} == {"x", "stacked", "y"}
    assert report["global"]["points"] == [p.index for p in points if not p.path]


def test_relative_sigma_is_absolute_sigma_times_std(tmp_path):
    """--sigma-scale std: the report's std of a point is numpy's std of its clean activation, and
    its curve is the absolute scan's at σ·std (same seed), walking and global alike."""
    path = export(Act(nn.ReLU()), (12,), tmp_path / "m.onnx")
    loaded = load_model(path)
    engine = Engine(loaded, CPU)
    data = _data(engine, 3 * np.random.default_rng(0).standard_normal((60, 12)).astype(np.float32))
    grid = np.array([0.03, 0.3, 1.0, 3.0])
    st = SweepSettings(grid, NoiseSpec("add"), repeats=3, batch_size=25)
    relative = run_scan(loaded, data, config_of(st, dict(at="1,2", sigma_scale="std")))
    points = find_points(loaded.model)
    values = Reference(path).values([points[1].tensor, points[2].tensor], data.x, np.arange(len(data.x)))
    stds = [p["activation_std"] for p in relative["points"]]
    np.testing.assert_allclose(stds, [v.std() for v in values], rtol=1e-5)
    assert relative["sigma_scale"] == "std" and relative["global"]["activation_std"] == stds
    for p, std in zip(relative["points"], stds, strict=True):
        assert p["sigmas"] == grid.tolist()  # reported in units of the std
        absolute = run_scan(loaded, data, config_of(SweepSettings(grid * std, st.spec, 3, batch_size=25), dict(mode="walking", at=str(p["index"]))))  # fmt: skip
        assert absolute["points"][0]["accuracy"] == p["accuracy"]
    per_point = [(points[i].index, points[i].tensor) for i in (1, 2)]
    ref = Reference(path).counts(per_point, data.x, data.y, grid, st.spec, 3, 0, GLOBAL_STREAM, 25, scales=stds)
    assert np.abs(np.array(relative["global"]["accuracy"]) * len(data.x) - ref).max() <= 1
    assert np.mean(relative["global"]["accuracy"][-1]) < 0.8  # the grid reaches the drop: not a trivial match
