"""Noise points: the paper's counts on the reference graphs, selection syntax, torch ↔ ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from wn_onnx.errors import WnError
from wn_onnx.graph_passes import ExposeValuesPass, find_points, select_points
from wn_onnx.io.model import load_model
from wn_onnx.training.export import export_onnx
from wn_onnx.training.nets import build


@pytest.mark.parametrize(
    ("arch", "shape", "bn", "count"),
    [
        ("mlp", (1, 28, 28), True, 11), ("mlp", (1, 28, 28), False, 8),
        ("lenet5", (3, 32, 32), True, 16), ("lenet5", (3, 32, 32), False, 12),
        ("cnn-s", (1, 49, 10), True, 11), ("cnn-s", (1, 49, 10), False, 8),
    ],
)  # fmt: skip
def test_torch_point_i_is_onnx_point_i(tmp_path, arch, shape, bn, count):
    """Same count as docs/reference.md, and point i's activation in torch equals point i's in ONNX."""
    torch.manual_seed(1)
    net = build(arch, shape, 10 if arch != "cnn-s" else 12, bn=bn).eval()
    path = export_onnx(net, shape, tmp_path / "m.onnx")
    loaded = load_model(path)
    points = find_points(loaded.model)
    assert len(points) == count == len(net.points)
    assert points[0].op_type == "Input" and points[-1].tensor == loaded.output_name
    assert "Flatten" not in {p.op_type for p in points}

    captured: list[np.ndarray] = []
    hooks = [p.register_forward_hook(lambda _m, _i, o: captured.append(o.detach().numpy())) for p in net.points]
    x = torch.randn(5, *shape)
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    model = loaded.fresh()
    ExposeValuesPass([p.tensor for p in points])(model)
    import onnx_ir as ir

    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x.numpy()}), strict=True))
    values["input"] = x.numpy()
    for i, p in enumerate(points):
        np.testing.assert_allclose(values[p.tensor], captured[i], rtol=1e-4, atol=1e-5, err_msg=f"point {i} {p.tensor}")


def test_default_points_skip_layout_and_integer_tensors(zoo):
    loaded = load_model(zoo["dynamic_reshape_mlp"][0])
    points = find_points(loaded.model)
    ops = [p.op_type for p in points]
    assert ops == ["Input", "Gemm", "Relu", "Gemm"], ops
    kinds = {n.op_type for n in loaded.model.graph}
    assert {"Shape", "Reshape"} <= kinds  # present, but never points


def test_points_of_residual_and_attention(zoo):
    res = [p.op_type for p in find_points(load_model(zoo["residual_cnn"][0]).model)]
    assert res.count("Conv") == 2 and "Add" in res and "ReduceMean" in res
    att = [p.op_type for p in find_points(load_model(zoo["attention"][0]).model)]
    assert "Softmax" in att and "LayerNormalization" in att and "Transpose" not in att


def test_selection_syntax(zoo):
    points = find_points(load_model(zoo["lenet5_bn"][0]).model)
    assert [p.index for p in select_points(points, "0,3,5-7")] == [0, 3, 5, 6, 7]
    assert [p.index for p in select_points(points, "14-")] == [14, 15]
    with pytest.raises(WnError, match=r"ambiguous.*0-3 or 13-15"):  # was: silently point 13 (indices wrapped)
        select_points(points, "-3")
    assert {p.op_type for p in select_points(points, "op:conv,Gemm")} == {"Conv", "Gemm"}
    assert [p.tensor for p in select_points(points, "re:^logits$")] == ["logits"]
    assert len(select_points(points, None)) == 16
    for bad, msg in (
        ("op:Nope", "selects no noise point"),
        ("16", "out of range"),
        ("re:(", "invalid regular"),
        ("a-b", "use indices"),
    ):
        with pytest.raises(WnError, match=msg):
            select_points(points, bad)


def test_affine_chains_of_lenet(zoo):
    from wn_onnx.graph_passes import affine_chain, data_dependent

    loaded = load_model(zoo["lenet5_bn"][0])
    graph, points = loaded.model.graph, find_points(loaded.model)
    live = data_dependent(graph)
    ops = {p.tensor: p.op_type for p in points}
    kinds = [[ops.get(t, "Flatten") for t in affine_chain(graph, p.tensor, live)] for p in points]
    assert kinds[0] == ["Conv", "BatchNormalization"]  # input → conv → BN, stops at the ReLU
    assert kinds[2] == [] and kinds[3] == []  # BN output feeds a ReLU; ReLU output a MaxPool
    assert kinds[8] == ["Flatten", "Gemm", "BatchNormalization"]
    assert kinds[14] == ["Gemm"] and affine_chain(graph, points[14].tensor, live) == ["logits"]
    res = find_points(load_model(zoo["residual_cnn"][0]).model)
    g2 = load_model(zoo["residual_cnn"][0]).model.graph
    relu1 = next(p for p in res if p.op_type == "Relu")
    assert affine_chain(g2, relu1.tensor, data_dependent(g2)) == []  # two consumers (conv2 and the skip)
