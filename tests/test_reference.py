"""The engine's shortcuts (prefix cache, σ stacking, affine chains, fixed-batch padding, found
batch axes) against the plain reference evaluator (tests/reference.py): same draws, same
predictions, on graphs from outside this project's exporter."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from corpus import TinyGainBN, build, export
from reference import Reference

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.engine.draws import GLOBAL_STREAM, WALK_STREAM
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import make_dataset
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec

CORPUS = ["lstm", "gru", "transformer", "transformer_dynamo", "residual_cnn", "qdq_cnn", "fp16", "tiny_bn_gain",
          "batch_minus_one", "two_outputs", "fixed_batch"]  # fmt: skip
SPECS = {
    "add": (NoiseSpec("add"), np.array([0.05, 0.5, 5.0])),
    "mul": (NoiseSpec("mul"), np.array([0.1, 1.0, 10.0])),
    "mixed": (NoiseSpec("mixed", "add-first", ratio=0.5), np.array([0.1, 1.0, 10.0])),
}
SAMPLES, BATCH, REPEATS, MOST_POINTS = 23, 10, 2, 6
# onnxruntime runs a QDQ graph with int8 kernels where it finds the Q→op→DQ pattern; cut at a
# point or with noise inserted the patterns differ, and an int8 rounding differs from its float
# emulation: compared with fusions off, where both compute the graph as written.
UNFUSED = {"qdq_cnn"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


def quiet(_n: int) -> None:
    pass


def spread(points: list, most: int) -> list:
    """At most ``most`` points, evenly over the graph, first and last included."""
    if len(points) <= most:
        return points
    return [points[int(i)] for i in np.unique(np.linspace(0, len(points) - 1, most).round())]


def original_names(path) -> set[str]:
    graph = onnx.load(str(path)).graph
    return {v.name for v in graph.input} | {o for n in graph.node for o in n.output}


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("name", CORPUS)
def test_engine_equals_reference(corpus, name, kind):
    spec, sigmas = SPECS[kind]
    net = corpus[name]
    loaded = load_model(net.path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    reference = Reference(net.path, fuse=name not in UNFUSED)
    if name in UNFUSED:
        engine.sessions.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = net.data(SAMPLES)
    clean = np.concatenate([engine.clean_logits(b.x) for b in engine.batches(make_dataset(x, None, name), BATCH)])
    data = make_dataset(x, clean[: len(x)].reshape(len(x), -1).argmax(axis=1), name)
    assert (loaded.fixed_batch == 4) is (name == "fixed_batch")  # padded runs of a batch built in
    points = find_points(loaded.model)
    assert {p.tensor for p in points} <= original_names(net.path)  # reported names are the user's
    st = SweepSettings(sigmas, spec, repeats=REPEATS, batch_size=BATCH)
    args = (data.x, data.y, sigmas, spec, REPEATS, st.seed)
    for point in spread(points, MOST_POINTS):
        fast = engine.walk(point, data, st, quiet).correct
        ref = reference.counts([(point.index, point.tensor)], *args, WALK_STREAM, BATCH)
        # same draws, same predictions (onnxruntime's fusions may move a logit by ~1e-7)
        assert np.abs(fast - ref).max() <= 1, (point, fast.tolist(), ref.tolist())
        engine.release(point)
    fast = engine.global_sweep(points, data, st, quiet).correct
    ref = reference.counts([(p.index, p.tensor) for p in points], *args, GLOBAL_STREAM, BATCH)
    assert np.abs(fast - ref).max() <= 1, ("global", fast.tolist(), ref.tolist())


def test_tiny_bn_gain_keeps_the_noise(tmp_path):
    """Training under multiplicative noise σ = 1e10 leaves BatchNorm gains of ~1e-10: the noise
    carried through the Conv→BN chain is then below float32 resolution next to the BN offsets, and
    A(t) − A(0) cancelled it (the walk gave the clean accuracy). Through the chain's linear part
    the walk must give what the whole graph and torch give."""
    torch.manual_seed(0)
    net = TinyGainBN().eval()
    path = export(net, (3, 6, 6), tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).standard_normal((200, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    loaded = load_model(path)
    point = find_points(loaded.model)[1]
    assert point.op_type == "Conv"
    sigmas, repeats = np.array([1e8, 1e10]), 10
    st = SweepSettings(sigmas, NoiseSpec("mul"), repeats=repeats, batch_size=64)
    ours = Engine(loaded, ["CPUExecutionProvider"]).walk(point, make_dataset(x, y, "tiny"), st, quiet)
    ref = Reference(path).counts([(1, point.tensor)], x, y, sigmas, st.spec, repeats, st.seed, WALK_STREAM, 64)
    assert np.abs(ours.correct - ref).max() <= 1, (ours.correct, ref)
    assert ours.accuracy[1].mean() < 0.8  # σ = 1e10 reaches the output
    for s, sigma in enumerate(sigmas):
        handle = net.conv.register_forward_hook(
            lambda _m, _i, out, v=float(sigma): out * (1 + v * torch.randn_like(out))
        )
        torch.manual_seed(1)
        with torch.no_grad():
            theirs = np.array([(net(torch.from_numpy(x)).argmax(1).numpy() == y).mean() for _ in range(repeats)])
        handle.remove()
        err = np.sqrt(ours.accuracy[s].var(ddof=1) / repeats + theirs.var(ddof=1) / repeats)
        assert abs(ours.accuracy[s].mean() - theirs.mean()) < 4 * err + 1e-2, (sigma, ours.accuracy[s], theirs)


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_points_hold_per_sample_data(corpus, name):
    """Values computed from shapes only (the TorchScript attention scale Sqrt(Cast(Shape(x))), of
    shape [1]) are no points: every point changes with the input's values at a fixed shape."""
    net = corpus[name]
    loaded = load_model(net.path)
    points = find_points(loaded.model)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    a = engine.run_values(net.data(3, seed=1), [p.tensor for p in points])
    b = engine.run_values(net.data(3, seed=2), [p.tensor for p in points])
    assert all(not np.array_equal(a[p.tensor], b[p.tensor]) for p in points), [
        p for p in points if np.array_equal(a[p.tensor], b[p.tensor])
    ]
    if name == "transformer":
        assert "Sqrt" not in {p.op_type for p in points}


def test_converted_model_reports_the_users_names(tmp_path):
    """Opset 11 → 15 conversion turns Softmax(axis=1) into Flatten → Softmax → Reshape and names
    the Softmax result ``…_intermediate``: the point is reported (and walked) at the user's value."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = (
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w1", (3, 3)), ("w2", (12, 5)))
    )
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Softmax", ["h"], ["softmax_0.tmp_0"], axis=1),
             helper.make_node("Flatten", ["softmax_0.tmp_0"], ["f"]), helper.make_node("MatMul", ["f", "w2"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 5])], [w1, w2])  # fmt: skip
    path = tmp_path / "opset11.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    loaded = load_model(path)
    points = find_points(loaded.model)
    assert [(p.tensor, p.op_type) for p in points] == [
        ("x", "Input"),
        ("h", "MatMul"),
        ("softmax_0.tmp_0", "Softmax"),
        ("y", "MatMul"),
    ]
    x = rng.standard_normal((30, 4, 3)).astype(np.float32)
    reference = Reference(path)
    (clean,) = reference.values(["y"], x, np.arange(len(x)))
    data = make_dataset(x, clean.argmax(axis=1), "x")
    st = SweepSettings(np.array([0.01, 0.1, 1.0]), NoiseSpec("add"), repeats=2, batch_size=BATCH)
    fast = Engine(loaded, ["CPUExecutionProvider"]).walk(points[2], data, st, quiet).correct
    ref = reference.counts([(2, points[2].tensor)], x, data.y, st.sigmas, st.spec, 2, st.seed, WALK_STREAM, BATCH)
    assert np.abs(fast - ref).max() <= 1 and fast.min() < len(x), (fast, ref)
