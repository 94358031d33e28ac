"""The noise pass: valid models, exact identity at σ = 0, the right noise statistics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from wn_onnx.graph_passes import ExposeValuesPass, InsertNoisePass, find_points, z_input_names
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, apply_noise

SPECS = [
    NoiseSpec("add"),
    NoiseSpec("mul"),
    NoiseSpec("mixed", "mul-first", ratio=0.5),
    NoiseSpec("mixed", "add-first", ratio=0.5),
]


def session(model: ir.Model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    return ort.InferenceSession(ir.to_proto(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])


def zero_feeds(spec: NoiseSpec, n: int) -> dict:
    feeds = {}
    if spec.kind != "mul":
        feeds["wn_sigma_add"] = np.zeros(n, np.float32)
    if spec.kind != "add":
        feeds["wn_sigma_mul"] = np.zeros(n, np.float32)
    return feeds


@pytest.mark.parametrize("name", ["mlp_bn", "lenet5_bn", "residual_cnn", "attention", "dynamic_reshape_mlp"])
@pytest.mark.parametrize("source", ["fed", "drawn"])
def test_sigma_zero_is_bit_identical(zoo, name, source):
    path, shape = zoo[name]
    loaded = load_model(path)
    points = find_points(loaded.model)
    spec = (
        NoiseSpec("mixed", "add-first", ratio=0.3)
        if name == "attention"
        else NoiseSpec("mul" if name == "mlp_bn" else "add")
    )
    model = loaded.fresh()
    InsertNoisePass([p.tensor for p in points], spec, source)(model)
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == [o.name for o in onnx.load(str(path)).graph.output]
    assert sum(n.domain == "wn_onnx" for n in proto.graph.node) == len(points)
    assert all(f.domain == "wn_onnx" for f in proto.functions)

    x = np.random.default_rng(0).standard_normal((7, *shape)).astype(np.float32)
    noisy_in = {"input": x, **zero_feeds(spec, len(points))}
    if source == "fed":
        rng = np.random.default_rng(1)
        taps = loaded.fresh()  # activation shapes come from a clean run with taps
        ExposeValuesPass([p.tensor for p in points if p.op_type != "Input"])(taps)
        tap_sess = session(taps)
        vals = dict(zip([o.name for o in tap_sess.get_outputs()], tap_sess.run(None, {"input": x}), strict=True))
        vals["input"] = x
        for k, p in enumerate(points):
            for zname in z_input_names(k, spec):
                noisy_in[zname] = rng.standard_normal(vals[p.tensor].shape).astype(np.float32)
    level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = session(loaded.fresh(), level).run(None, {"input": x})
    got = session(model, level).run(None, noisy_in)
    for a, b in zip(ref, got, strict=True):
        assert np.array_equal(a, b), np.abs(a - b).max()
    # With onnxruntime's fusions on, noise nodes block some fusions: same predictions, ~1e-7 off.
    ref_opt = session(loaded.fresh()).run(None, {"input": x})[0]
    got_opt = session(model).run(None, noisy_in)[0]
    np.testing.assert_allclose(got_opt, ref_opt, rtol=1e-5, atol=1e-5)


def identity_like(n: int = 40000) -> ir.Model:
    """y = x · 1 (a Mul by a constant): the only point is y, so y_noisy = noise(x)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["y"])],
        "identity_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def expected_moments(spec: NoiseSpec, c: float, sa: float, sm: float) -> tuple[float, float]:
    """Mean and std of noise(c) for constant input c (docs/method.md's formulas)."""
    if spec.kind == "add":
        return c, sa
    if spec.kind == "mul":
        return c, abs(c) * sm
    if spec.order == "mul-first":
        return c, float(np.sqrt(c**2 * sm**2 + sa**2))
    return c, float(np.sqrt((c**2 + sa**2) * (1 + sm**2) - c**2))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.order or s.kind)
@pytest.mark.parametrize("source", ["fed", "drawn"])
def test_noise_statistics(spec, source):
    n, c, sigma = 40000, 2.0, 0.8
    model = identity_like(n)
    InsertNoisePass(["y"], spec, source)(model)
    sa, sm = (float(v) for v in spec.components(sigma))
    x = np.full((2, n), c, np.float32)
    feeds = {"x": x}
    if spec.kind != "mul":
        feeds["wn_sigma_add"] = np.array([sa], np.float32)
    if spec.kind != "add":
        feeds["wn_sigma_mul"] = np.array([sm], np.float32)
    rng = np.random.default_rng(3)
    zs = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(spec.draws)]
    if source == "fed":
        feeds.update(zip(z_input_names(0, spec), zs, strict=True))
    y = session(model).run(None, feeds)[0]
    mean, std = expected_moments(spec, c, sa, sm)
    assert abs(y.mean() - mean) < 5 * std / np.sqrt(y.size)
    assert abs(y.std() / std - 1) < 0.02
    if source == "fed":  # the ONNX function and its numpy twin agree element by element
        twin = apply_noise(x, zs[0], zs[1] if len(zs) > 1 else None, sa, sm, spec)
        np.testing.assert_allclose(y, twin, rtol=1e-6, atol=1e-6)


def test_orders_differ():
    """Same draws, both mixed orders: different results (the order is not cosmetic)."""
    x = np.full((1, 1000), 3.0, np.float32)
    rng = np.random.default_rng(0)
    z, z2 = rng.standard_normal((2, 1, 1000)).astype(np.float32)
    a = apply_noise(x, z, z2, 1.0, 1.0, NoiseSpec("mixed", "mul-first", ratio=0.5))
    b = apply_noise(x, z, z2, 1.0, 1.0, NoiseSpec("mixed", "add-first", ratio=0.5))
    assert np.abs(a - b).mean() > 0.5


def test_drawn_noise_is_fresh_per_run():
    model = identity_like(1000)
    InsertNoisePass(["y"], NoiseSpec("add"), "drawn")(model)
    s = session(model)
    feeds = {"x": np.zeros((1, 1000), np.float32), "wn_sigma_add": np.array([1.0], np.float32)}
    assert not np.array_equal(s.run(None, feeds)[0], s.run(None, feeds)[0])
