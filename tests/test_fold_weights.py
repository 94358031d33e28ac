"""Weights held as constant expressions (graph_passes/fold_weights.py): each form a layer's weight
comes in is found and folded to the float values numpy computes from the file, the folded graph
computes what the file does, and the weight scan of a TorchScript export (Constant nodes, a
Transpose) and of a QDQ model gives each sample the outcome of the file with the perturbed weight
written in by plain onnx edits."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import config_of
from corpus import SmallCNN, export, quantize_qdq
from onnx import TensorProto, helper, numpy_helper
from test_noise_models import _formula
from torch import nn

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.executors import worker_setup, worker_state
from wn_onnx.graph_passes.fold_weights import FoldWeightsPass, weights_folded
from wn_onnx.graph_passes.weights import find_weight_points
from wn_onnx.io.data import make_dataset
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.scanner import run_scan

SEED, SIGMA, REPEATS, SAMPLES = 3, 0.3, 2, 64  # _formula draws with seed 3


def _numpy_value(graph: onnx.GraphProto, name: str) -> np.ndarray:
    """The value ``name`` computed in numpy from the file's own tensors: the reference for a folded weight."""
    initializers = {t.name: t for t in graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = next(n for n in graph.node if name in n.output)
    args = [_numpy_value(graph, i) for i in node.input]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Constant":
        return numpy_helper.to_array(attrs["value"])
    if node.op_type == "Identity":
        return args[0]
    if node.op_type == "Cast":
        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if node.op_type == "Transpose":
        return args[0].transpose(attrs.get("perm"))
    if node.op_type == "Reshape":
        return args[0].reshape(args[1])
    if node.op_type == "Flatten":
        axis = attrs.get("axis", 1)
        return args[0].reshape(int(np.prod(args[0].shape[:axis])), -1)
    if node.op_type in ("Squeeze", "Unsqueeze"):
        return (np.squeeze if node.op_type == "Squeeze" else np.expand_dims)(args[0], tuple(args[1]))
    assert node.op_type == "DequantizeLinear", node.op_type
    q, scale, zero = args
    shape = [-1 if k == attrs.get("axis", 1) % q.ndim and scale.ndim else 1 for k in range(q.ndim)]
    return (q.astype(np.int32) - zero.astype(np.int32).reshape(shape)).astype(np.float32) * scale.reshape(shape)


def _predictions(
    proto: onnx.ModelProto, x: np.ndarray, weights: dict[tuple[str, int], np.ndarray], fuse: bool = True
) -> np.ndarray:
    """The file's predictions with each (layer, input slot) of ``weights`` reading that array from a
    new initializer instead of what the file computes there: the perturbed weights written in."""
    edited = onnx.ModelProto()
    edited.CopyFrom(proto)
    for k, ((layer, slot), w) in enumerate(weights.items()):
        node = next(n for n in edited.graph.node if n.name == layer)
        node.input[slot] = f"ref_w_{k}"
        edited.graph.initializer.append(numpy_helper.from_array(w, f"ref_w_{k}"))
    options = ort.SessionOptions()
    if not fuse:  # the QDQ patterns of the other layers as written, not as int8 kernels
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(edited.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)


# ---- the pass alone, on each form a weight comes in ----------------------------------------------------

W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
Q = np.random.default_rng(1).integers(-128, 128, (4, 3)).astype(np.int8)


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array))


FORMS = {  # name → (nodes computing "w", initializers)
    "Constant": ([_const("w", W)], []),
    "Identity": ([helper.make_node("Identity", ["w0"], ["w"])], [numpy_helper.from_array(W, "w0")]),
    "Cast": ([helper.make_node("Cast", ["w0"], ["w"], to=TensorProto.FLOAT)], [numpy_helper.from_array(W.astype(np.float16), "w0")]),
    "Transpose": ([_const("c", W.T), helper.make_node("Transpose", ["c"], ["w"], perm=[1, 0])], []),
    "Reshape": ([_const("s", np.array([4, 3])), helper.make_node("Reshape", ["w0", "s"], ["w"])],
                [numpy_helper.from_array(W.ravel(), "w0")]),
    "Flatten": ([helper.make_node("Flatten", ["w0"], ["w"], axis=1)], [numpy_helper.from_array(W[:, :, None], "w0")]),
    "Unsqueeze-Squeeze": ([_const("a", np.array([0])), helper.make_node("Unsqueeze", ["w0", "a"], ["u"]),
                           helper.make_node("Squeeze", ["u", "a"], ["w"])], [numpy_helper.from_array(W, "w0")]),
    "DequantizeLinear per channel": (
        [helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w"], axis=1)],
        [numpy_helper.from_array(Q, "q"), numpy_helper.from_array(np.array([0.01, 0.02, 0.005], np.float32), "scale"),
         numpy_helper.from_array(np.array([3, -2, 0], np.int8), "zero")],
    ),
    "DequantizeLinear per tensor": (
        [helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w"])],
        [numpy_helper.from_array((Q.astype(np.int32) + 128).astype(np.uint8), "q"),
         numpy_helper.from_array(np.array(0.01, np.float32), "scale"), numpy_helper.from_array(np.array(128, np.uint8), "zero")],
    ),
}  # fmt: skip


def _matmul(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    """y = x · w with ``w`` computed by ``nodes`` (opset 17: DequantizeLinear as QDQ models of that opset have it)."""
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("form", list(FORMS))
def test_each_form_of_a_constant_weight_becomes_the_initializer_numpy_computes(form):
    """Before: no weight point. After the pass: one, named as the value the layer reads, holding
    exactly what numpy computes from the file; the nodes and quantised tensors it came from are gone
    and the graph computes what the file does."""
    proto = _matmul(*FORMS[form])
    onnx.checker.check_model(proto)
    model = ir.from_proto(proto)
    assert find_weight_points(model) == []
    assert FoldWeightsPass()(model).modified
    [point] = find_weight_points(model)
    assert (point.tensor, point.node, point.channel_axis) == ("w", "layer", 1)
    folded = model.graph.initializers["w"].const_value.numpy()
    expected = _numpy_value(proto.graph, "w")
    assert folded.dtype == np.float32 and np.array_equal(folded, expected)
    assert [n.op_type for n in model.graph] == ["MatMul"] and list(model.graph.initializers) == ["w"]
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(model, x), _run(ir.from_proto(proto), x))


def test_what_is_no_constant_layer_weight_keeps_its_form(tmp_path):
    """A weight computed by an op outside the folded ones (here Mul) is not a weight point; a
    quantised bias is no weight and stays quantised (only what a weight point needs becomes float);
    the graph's own dead nodes stay; a loaded model with nothing to fold is handed back as it is."""
    scaled = _matmul([_const("two", np.float32(2)), helper.make_node("Mul", ["w0", "two"], ["w"])],
                     [numpy_helper.from_array(W, "w0")])  # fmt: skip
    model = ir.from_proto(scaled)
    assert not FoldWeightsPass()(model).modified and find_weight_points(model) == []
    nodes, initializers = FORMS["DequantizeLinear per channel"]
    model = ir.from_proto(_matmul([*nodes, helper.make_node("Identity", ["x"], ["dead"])], initializers))
    assert FoldWeightsPass()(model).modified and [n.op_type for n in model.graph] == ["Identity", "MatMul"]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"]), helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.array([1, 2, 3], np.int32), "bq"),
         numpy_helper.from_array(np.float32(0.1), "bs")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bias.onnx"))
    loaded = load_model(tmp_path / "bias.onnx")
    assert not FoldWeightsPass()(loaded.model).modified and weights_folded(loaded) is loaded
    assert [p.tensor for p in find_weight_points(loaded.model)] == ["w"]
    assert [n.op_type for n in loaded.model.graph] == ["DequantizeLinear", "Gemm"]


# ---- the weight scan against the file with the perturbed weights written in ------------------------------


class ConstantWeights(nn.Module):
    """Weights held as plain tensors, not parameters: TorchScript writes them as Constant nodes, the
    linear layer's through a Transpose (no constant folding, as tests/corpus.py exports)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.kernel = torch.randn(4, 3, 3, 3, generator=gen) * 0.3
        self.matrix = torch.randn(10, 4 * 6 * 6, generator=gen) * 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.relu(F.conv2d(x, self.kernel, padding=1)).flatten(1), self.matrix)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(TorchScript export with Constant and Transpose weights, QDQ model of a small CNN), each with its sample shape."""
    folder = tmp_path_factory.mktemp("fold")
    torch.manual_seed(0)
    constant = export(ConstantWeights(), (3, 6, 6), folder / "constant.onnx")
    qdq = quantize_qdq(export(SmallCNN(), (3, 8, 8), folder / "cnn.onnx"), (3, 8, 8), folder / "qdq.onnx")
    return {"constant": (constant, (3, 6, 6)), "qdq": (qdq, (3, 8, 8))}


def _producers(proto: onnx.ModelProto, node: onnx.NodeProto, slot: int) -> list[str]:
    """The ops the layer's weight input is computed by, from the layer back to a stored tensor."""
    chain, name = [], node.input[slot]
    while (producer := next((n for n in proto.graph.node if name in n.output), None)) is not None:
        chain.append(producer.op_type)
        name = producer.input[0] if producer.input else ""
    return chain


@pytest.mark.parametrize(("name", "forms"), [("constant", [["Constant"], ["Transpose", "Constant"]]),
                                             ("qdq", [["DequantizeLinear"], ["DequantizeLinear"]])])  # fmt: skip
def test_each_sample_gets_the_outcome_of_the_file_with_the_perturbed_weight_written_in(exported, name, forms):
    """For every weight point (the walk: that layer alone) and for all at once (global), at one σ
    and each repeat: a sample's score is whether the file, its weights replaced by perturbed copies
    of the numpy-computed weights, predicts the label (QDQ: both without onnxruntime's int8
    fusions, which compute another graph than the one written)."""
    path, shape = exported[name]
    proto = onnx.load(str(path))
    loaded = load_model(path)
    assert find_weight_points(loaded.model) == []  # without folding no layer is found
    engine = Engine(weights_folded(loaded), ["CPUExecutionProvider"])
    fuse = name != "qdq"
    if not fuse:
        engine.sessions.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    points = find_weight_points(engine.loaded.model)
    layers = {n.name: n for n in proto.graph.node}
    slots = {p.tensor: list(layers[p.node].input).index(p.tensor) for p in points}
    assert [_producers(proto, layers[p.node], slots[p.tensor]) for p in points] == forms
    clean = {p.tensor: _numpy_value(proto.graph, p.tensor) for p in points}
    for p in points:  # the weights the scan perturbs are those numpy computes from the file, exactly
        assert np.array_equal(engine.loaded.model.graph.initializers[p.tensor].const_value.numpy(), clean[p.tensor])
    x = np.random.default_rng(7).standard_normal((SAMPLES, *shape)).astype(np.float32)
    predicted = _predictions(proto, x, {}, fuse)
    y = predicted.copy()
    y[::4] = (y[::4] + 1) % loaded.num_classes
    data = make_dataset(x, y, name)
    st = SweepSettings(np.array([SIGMA]), NoiseSpec("add"), REPEATS, seed=SEED, batch_size=16)
    evaluations = [(engine.walker(p, data, st), [p]) for p in points] + [
        (engine.global_noise(points, st, data=data), points)
    ]
    changed = 0
    for ev, perturbed in evaluations:
        for r in range(REPEATS):
            scores, _ = engine.outcomes(ev, data, st, SIGMA, np.arange(SAMPLES), r)
            weights = {(p.node, slots[p.tensor]): _formula(st.spec, clean[p.tensor], SIGMA, p.index, r, SIGMA, p.channel_axis)
                       for p in perturbed}  # fmt: skip
            written = _predictions(proto, x, weights, fuse)
            np.testing.assert_array_equal(scores, (written == y).astype(float), err_msg=f"{weights.keys()} r={r}")
            changed += int((written != predicted).sum())
    assert changed > 0  # the noise moves predictions: the comparison is not of the clean model with itself


def test_a_scan_of_constant_weights_equals_the_written_file_and_workers_fold_alike(exported):
    """The scan (walking and global) of the TorchScript export: every (point, σ, repeat) accuracy
    equals the file's with the perturbed weights written in; a --jobs worker, which loads the file
    itself, folds it to the same weights and walks them to the same counts."""
    path, shape = exported["constant"]
    proto = onnx.load(str(path))
    loaded = load_model(path)
    x = np.random.default_rng(8).standard_normal((SAMPLES, *shape)).astype(np.float32)
    y = _predictions(proto, x, {})
    y[::4] = (y[::4] + 1) % loaded.num_classes
    data = make_dataset(x, y, "arrays")
    st = SweepSettings(np.array([SIGMA]), NoiseSpec("add"), REPEATS, seed=SEED, batch_size=16)
    report = run_scan(loaded, data, config_of(st, dict(mode="both", on="weights")))
    points = find_weight_points(weights_folded(loaded).model)
    assert [p["tensor"] for p in report["points"]] == [p.tensor for p in points] and len(points) == 2
    layers = {n.name: n for n in proto.graph.node}
    where = {p.tensor: (p.node, list(layers[p.node].input).index(p.tensor)) for p in points}

    def accuracy(chosen: list, s: float, r: int) -> float:
        weights = {where[p.tensor]: _formula(st.spec, _numpy_value(proto.graph, p.tensor), s, p.index, r, SIGMA, p.channel_axis)
                   for p in chosen}  # fmt: skip
        return float((_predictions(proto, x, weights) == y).mean())

    for curve, p in zip(report["points"], points, strict=True):
        for s, row in zip(curve["sigmas"], curve["accuracy"], strict=True):
            assert row == pytest.approx([accuracy([p], s, r) for r in range(REPEATS)], abs=1e-12), (p.tensor, s)
    for s, row in zip(report["global"]["sigmas"], report["global"]["accuracy"], strict=True):
        assert row == pytest.approx([accuracy(points, s, r) for r in range(REPEATS)], abs=1e-12), s
    engine = Engine(weights_folded(loaded), ["CPUExecutionProvider"])
    worker = worker_state(*worker_setup(engine, data, 1, None))["engine"]
    assert worker.loaded.weights_folded
    for p in points:
        assert np.array_equal(
            worker.walk(p, data, st, lambda _n: None).correct, engine.walk(p, data, st, lambda _n: None).correct
        )
    assert find_weight_points(loaded.model) == []  # the loaded model keeps the graph as written
