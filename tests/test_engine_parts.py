"""The engine's pieces alone: session failures, the linear part of an affine chain, the stacking
probe and the shared sweep loop (with a stand-in evaluation)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.engine.sessions import Sessions, run
from wn_onnx.engine.stacking import stacking_is_exact
from wn_onnx.engine.sweep import Batch, SweepSettings, sweep
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import LinearPartPass
from wn_onnx.graph_passes.insert_noise import StackNoisyInputPass
from wn_onnx.noise import NoiseSpec

SESSIONS = Sessions(["CPUExecutionProvider"])


def model(nodes, inputs, output, inits=()) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], list(inits),
    )  # fmt: skip
    return ir.from_proto(
        onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    )


def test_onnxruntime_failure_is_one_line():
    session = SESSIONS.build(model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, 3])], "y"))
    with pytest.raises(WnError) as err:
        run(session, ("y",), {"x": np.zeros((5, 3), np.float32)})
    assert "\n" not in str(err.value) and "index: 0 Got: 5 Expected: 2" in str(err.value)


def test_linear_part_keeps_a_tiny_gain():
    """Conv → BN with gain 1e-10 and offsets of 0.1: the linear part maps t to ~1e-10·t, where
    A(t) − A(0) is exactly 0 in float32."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    bn = [np.full(2, v, np.float32) for v in (1e-10, 0.1, 0.05, 1.0)]  # scale, bias, mean, var
    inits = [
        numpy_helper.from_array(a, n) for a, n in zip([w, np.full(2, 0.3, np.float32), *bn], "wbsBmv", strict=True)
    ]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "s", "B", "m", "v"], ["y"])]  # fmt: skip
    chain = model(nodes, [("x", ["N", 1, 2, 2])], "y", inits)
    t = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    affine = SESSIONS.build(chain)
    (a_t,), (a_0,) = (run(affine, ("y",), {"x": v}) for v in (t, np.zeros_like(t)))
    assert np.all(a_t - a_0 == 0)  # the cancellation the linear part avoids
    LinearPartPass()(chain)
    (lin,) = run(SESSIONS.build(chain), ("y",), {"x": t})
    want = (w[:, 0, 0, 0][None, :, None, None] * t) * (1e-10 / np.sqrt(1 + 1e-5))
    np.testing.assert_allclose(lin, want, rtol=1e-5)


@pytest.mark.parametrize(("mixing", "exact"), [(False, True), (True, False)])
def test_stacking_probe_finds_graphs_that_mix_samples(mixing, exact):
    """x − mean over the batch mixes samples: a large σ stacked beside σ = 0 changes σ = 0's result."""
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    if mixing:
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ]
    suffix = model(nodes, [("x", ["N", 3])], "y")
    StackNoisyInputPass("x", NoiseSpec("add"))(suffix)
    start = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    assert stacking_is_exact(SESSIONS.build(suffix), NoiseSpec("add"), "x", start, 0, "y") is exact


class Stub:
    """An evaluation whose logits say whether σ ≤ 1 (class 0) or not (class 1)."""

    cache_tag = "z"

    def __init__(self, chunk: int) -> None:
        self.per_chunk, self.draws = chunk, []

    def start(self, batch, first, x):
        self.x = x

    def chunk(self, st):
        return self.per_chunk

    def noise(self, key):
        self.draws.append(key)
        return [np.zeros(1)]

    def logits(self, noise, sa, sm, fresh):
        return [np.tile([[1.0, 0.0]] if s <= 1 else [[0.0, 1.0]], (len(self.x), 1)) for s in sa]


@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_sweep_counts_every_configuration_once(chunk):
    x, y = np.zeros((10, 1)), np.zeros(10, np.int64)
    batches = [Batch(0, x[:4], y[:4], 4), Batch(4, x[4:8], y[4:8], 4), Batch(8, x[8:], y[8:], 2)]
    st = SweepSettings(np.array([0.0, 0.5, 2.0, 3.0]), NoiseSpec("add"), repeats=2)
    stub, ticks = Stub(chunk), []
    with RoundCache() as cache:
        counts = sweep(stub, iter(batches), st, ticks.append, lambda _f, xb: np.tile([[1.0, 0.0]], (len(xb), 1)), cache)
    assert counts.total == 10 and sum(ticks) == 3 * 2 * 3  # σ = 0 is the clean result, never evaluated
    np.testing.assert_array_equal(counts.correct, [[10, 10], [10, 10], [0, 0], [0, 0]])
    assert stub.draws == [(0,), (1,)] * 3  # one draw per (batch, repeat), whatever the chunking


@pytest.mark.parametrize("batch", [64, 1000])
def test_engine_reports_its_own_work(batch):
    """The progress bar's count comes from the engine (Engine.sweep_work), not from the scan's
    guess: it is exactly what a walk and a global sweep report to their tick, σ = 0 left out."""
    from dataclasses import replace

    import wn_onnx
    from wn_onnx.engine import Engine, providers_for

    loaded = wn_onnx.load_model(wn_onnx.DEFAULT_MODEL)
    engine = Engine(loaded, providers_for("cpu"))
    data = wn_onnx.load_data(loaded, wn_onnx.DEFAULT_DATA)
    st = SweepSettings(np.array([0.0, 0.1, 1.0, 10.0]), NoiseSpec("add"), repeats=2, batch_size=batch)
    point = wn_onnx.find_points(loaded, at="3")[0]
    ticks: list[int] = []
    engine.walk(point, data, st, ticks.append)
    assert sum(ticks) == engine.sweep_work(data, replace(st, batch_size=engine.walk_batch([point], data, st)))
    ticks.clear()
    engine.global_sweep([point], data, st, ticks.append)
    assert sum(ticks) == engine.sweep_work(data, replace(st, batch_size=engine.global_batch([point], data, st)))
