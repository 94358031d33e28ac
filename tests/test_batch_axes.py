"""The batch axis of each value is found from the graph, not assumed to be axis 0: the probe alone,
and random graphs whose samples sit on axis 0, 1 or 2, walked and compared with the reference."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from reference import Reference

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.engine.axes import fixed_sample_axis, sample_axis
from wn_onnx.engine.draws import WALK_STREAM, draw, draw_at
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import make_dataset
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec


def test_sample_axis_from_two_batch_sizes():
    assert sample_axis([(5, 1, 2, 12), (5, 1, 3, 12)]) == 2  # LSTM Y [seq, dir, N, H]
    assert sample_axis([(2, 6, 16), (3, 6, 16)]) == 0
    assert sample_axis([(16, 6, 8), (24, 6, 8)]) is None  # heads folded into the batch
    assert sample_axis([(1,), (1,)]) is None  # no per-sample axis
    assert sample_axis([(2, 2), (3, 3)]) is None  # two axes follow the batch
    assert fixed_sample_axis((8, 3), 8) == 0 and fixed_sample_axis((3, 8), 8) is None


def test_draws_follow_the_sample_wherever_its_axis_is():
    """A sample receives the same numbers whatever the axis it sits on and the batch it is in."""
    flat = draw(3, 0, (1, 0), (300, 4, 5), 1, np.float32, 0)[0]
    moved = draw_at(3, 0, (1, 0), (4, 300, 5), 1, 1, np.float32, 0, 0)[0]
    np.testing.assert_array_equal(np.moveaxis(moved, 1, 0), flat)
    part = draw_at(3, 0, (1, 0), (4, 7, 5), 1, 1, np.float32, 250, 9)[0]
    np.testing.assert_array_equal(np.moveaxis(part, 1, 0), flat[250:257])
    whole = draw_at(3, 0, (1, 0), (4, 5), None, 1, np.float32, 250, 9)[0]
    assert not np.array_equal(whole, draw_at(3, 0, (1, 0), (4, 5), None, 1, np.float32, 250, 10)[0])


OPS = ("relu", "tanh", "add", "mul", "matmul", "swap")


def random_graph(axis: int, ops: list[str], seed: int, path) -> None:
    """x [N, 3, 4] → Transpose putting N on ``axis`` → ``ops`` (keeping N there) → back to
    [N, ·] → MatMul to 4 classes."""
    rng = np.random.default_rng(seed)
    dims: list = [3, 4]
    dims.insert(axis, "N")
    perm = [[0, 1, 2], [1, 0, 2], [1, 2, 0]][axis]
    nodes = [helper.make_node("Transpose", ["x"], ["h0"], perm=perm)]
    inits = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    for i, op in enumerate(ops):
        src, dst = f"h{i}", f"h{i + 1}"
        others = [d for d in dims if d != "N"]
        if op in ("relu", "tanh"):
            nodes.append(helper.make_node(op.capitalize(), [src], [dst]))
        elif op in ("add", "mul"):
            shape = [1 if d == "N" else d for d in dims]
            nodes.append(helper.make_node(op.capitalize(), [src, const(f"c{i}", rng.standard_normal(shape))], [dst]))
        elif op == "matmul" and axis < 2:  # contract the last axis
            w = const(f"w{i}", rng.standard_normal((dims[-1], 5)) / np.sqrt(dims[-1]))
            nodes.append(helper.make_node("MatMul", [src, w], [dst]))
            dims[-1] = 5
        elif op == "matmul":  # N is last: contract axis 1 from the left
            w = const(f"w{i}", rng.standard_normal((5, dims[1])) / np.sqrt(dims[1]))
            nodes.append(helper.make_node("MatMul", [w, src], [dst]))
            dims[1] = 5
        else:  # swap the two other axes
            a, b = [j for j, d in enumerate(dims) if d != "N"]
            p = [0, 1, 2]
            p[a], p[b] = b, a
            nodes.append(helper.make_node("Transpose", [src], [dst], perm=p))
            dims[a], dims[b] = others[1], others[0]
    n = len(ops)
    back = [dims.index("N")] + [j for j, d in enumerate(dims) if d != "N"]
    width = int(np.prod([d for d in dims if d != "N"]))
    nodes += [
        helper.make_node("Transpose", [f"h{n}"], ["t"], perm=back),
        helper.make_node("Flatten", ["t"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", const("wout", rng.standard_normal((width, 4)) / np.sqrt(width))], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    axis=st.sampled_from([0, 1, 2]),
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["add", "mul"]),
)
def test_random_graphs_walk_like_the_reference(tmp_path, axis, ops, seed, kind):
    path = tmp_path / f"g{axis}{seed}{''.join(o[0] for o in ops)}.onnx"
    random_graph(axis, ops, seed, path)
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    reference = Reference(path)
    x = np.random.default_rng(seed).standard_normal((13, 3, 4)).astype(np.float32)
    (clean,) = reference.values(["y"], x, np.arange(len(x)))
    data = make_dataset(x, clean.argmax(axis=1), "random")
    sigmas, spec = np.array([0.1, 1.0, 10.0]), NoiseSpec(kind)
    settings_ = SweepSettings(sigmas, spec, repeats=1, batch_size=5)
    for point in find_points(loaded.model)[1:-1]:  # inside: N on ``axis``
        assert engine.sample_axis(point.tensor, x) == axis, point
        fast = engine.walk(point, data, settings_, lambda _n: None)
        assert engine.routes.route(point, spec, x).stack  # σ values stacked on that axis
        ref = reference.counts([(point.index, point.tensor)], x, data.y, sigmas, spec, 1, 0, WALK_STREAM, 5)
        assert np.abs(fast.correct - ref).max() <= 1, (point, fast.correct.tolist(), ref.tolist())
        engine.release(point)
