"""The noise-model registry: each built-in model against a numpy reference of its formula, weight
noise against the whole graph run by onnxruntime with the perturbed weights written into the file,
the draws' sharing across samples and repeats, plug-ins, and the bad input each model refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import config_of
from onnx import numpy_helper
from scipy import stats

from tests.conftest import wn
from wn_onnx.engine import SweepSettings
from wn_onnx.engine.draws import WEIGHT_STREAM
from wn_onnx.errors import ConfigError
from wn_onnx.graph_passes.weights import find_weight_points
from wn_onnx.io.model import load_model
from wn_onnx.noise import BitFlip, NoiseSpec, Quant, Reference, make_noise
from wn_onnx.noise.bitflip import flip_positions
from wn_onnx.scanner import run_scan

# ---- each model against its formula ---------------------------------------------------------------


def test_additive_weight_noise_is_relative_to_the_largest_weight():
    """W + σ·max|W|·z: over many draws the perturbation has mean 0 and variance (σ·max|W|)² per
    element, within sampling error (and absolute: σ² whatever the weights)."""
    w = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32) * 0.3
    ref = Reference.of_weight(w, 0)
    for scale, unit in ((None, float(np.abs(w).max())), ("absolute", 1.0)):
        model = NoiseSpec("add", weight_scale=scale)
        rng = np.random.default_rng(1)
        d = np.stack([model.perturb(w, 0.2, model.draw(rng, w.shape, 0.2), ref) - w for _ in range(200)])
        n = d.size
        sd = 0.2 * unit
        assert abs(d.mean()) < 4 * sd / np.sqrt(n)
        assert abs(d.var() / sd**2 - 1) < 4 * np.sqrt(2 / n)


def test_multiplicative_weight_noise_scales_each_weight():
    """W·(1 + σz): the perturbation of each weight has variance σ²·w²."""
    w = np.linspace(-1, 1, 30, dtype=np.float32)
    model, rng = NoiseSpec("mul"), np.random.default_rng(2)
    d = np.stack([model.perturb(w, 0.5, model.draw(rng, w.shape, 0.5), Reference.of_weight(w, None)) - w
                  for _ in range(4000)])  # fmt: skip
    expected = (0.5 * w) ** 2
    assert np.allclose(d.var(axis=0), expected, rtol=0.1, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("per_tensor", [False, True])
def test_quantisation_equals_numpy_rounding(bits, per_tensor):
    """b-bit symmetric quantisation is exactly numpy's round-half-even onto the grid step·k,
    |k| ≤ 2^(b-1)−1, step = max|w| (per output channel, or per tensor) / (2^(b-1)−1); 1 bit: ±max."""
    w = np.random.default_rng(3).standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel stays zero
    w64 = w.astype(np.float64)  # the grid is computed in float64, the result cast back
    top = np.abs(w64).max() if per_tensor else np.abs(w64).max(axis=(1, 2, 3), keepdims=True)
    if bits == 1:
        expected = np.sign(w64) * top
    else:
        n = 2 ** (bits - 1) - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.nan_to_num(np.clip(np.round(w64 / (top / n)), -n, n) * (top / n))
    got = Quant(per_tensor=per_tensor).perturb(w, 2.0**-bits, [], Reference.of_weight(w, 0))
    assert got.dtype == w.dtype
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_bit_flip_rate_per_bit_position_is_binomial():
    """Each bit of each value flips with probability p: the flips counted per bit position lie in
    a 99.9 % binomial interval, and the flips at a smaller p are a subset of those at a larger one."""
    model = BitFlip("fp32")
    values = np.random.default_rng(4).standard_normal(20_000).astype(np.float32)
    ref = Reference.of_weight(values, None)
    draws = model.draw(np.random.default_rng(5), values.shape, 0.05)
    for p in (0.01, 0.05):
        flipped = values.view(np.uint32) ^ model.perturb(values, p, draws, ref).view(np.uint32)
        per_bit = np.array([np.count_nonzero(flipped & np.uint32(1 << b)) for b in range(32)])
        lo, hi = stats.binom.interval(0.999, values.size, p)
        assert np.all((per_bit >= lo) & (per_bit <= hi)), per_bit
    small = values.view(np.uint32) ^ model.perturb(values, 0.01, draws, ref).view(np.uint32)
    large = values.view(np.uint32) ^ model.perturb(values, 0.05, draws, ref).view(np.uint32)
    assert np.all(small & ~large == 0)  # nested: common random numbers across p


def test_int8_bit_flips_act_on_the_stored_integers():
    """int8: values stored as round(x/step) with step = max|x|/127; a flip is one bit of that byte."""
    x = np.array([0.5, -1.0, 0.25, 1.0], np.float32)
    model = BitFlip("int8")
    positions = np.array([0, 15])  # bit 0 of the first byte, bit 7 (the sign) of the second
    got = model.perturb(x, 0.1, [positions, np.zeros(2, np.float32)], Reference(1.0))
    q = np.round(x * 127).astype(np.int8)
    q_flipped = q.view(np.uint8).copy()
    q_flipped[0] ^= 1
    q_flipped[1] ^= 0x80
    np.testing.assert_allclose(got, q_flipped.view(np.int8) / 127, rtol=1e-6)


def test_flip_positions_match_the_bernoulli_count():
    rng = np.random.default_rng(6)
    counts = [flip_positions(rng, 100_000, 1e-3).size for _ in range(200)]
    assert abs(np.mean(counts) - 100) < 4 * np.sqrt(100 / 200)
    positions = flip_positions(rng, 1000, 0.3)
    assert np.all(np.diff(positions) > 0) and positions.max() < 1000


# ---- weight points and the engine's weight noise against the whole graph ----------------------------


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    """A residual CNN (a skip connection around its second Conv) with random BN, labels from its own
    predictions on noisy inputs so that clean accuracy is well below 100 %."""
    import torch

    from tests.conftest import ResidualCNN, _export_plain, randomize_bn

    torch.manual_seed(0)
    path = _export_plain(randomize_bn(ResidualCNN()), (3, 12, 12), tmp_path_factory.mktemp("w") / "res.onnx")
    x = np.random.default_rng(7).standard_normal((150, 3, 12, 12)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"input": x})[0].argmax(1)
    y[::4] = (y[::4] + 1) % 10  # a quarter wrong: clean accuracy 75 %
    return path, x, y


def _report(path, x, y, model, grid, repeats=2, mode="walking", at=None, batch_size=64):
    from wn_onnx.io.data import Dataset

    loaded = load_model(path)
    st = SweepSettings(model.levels(grid), model, repeats, seed=3, batch_size=batch_size)
    return run_scan(loaded, Dataset(x, y, "arrays"), config_of(st, dict(mode=mode, at=at, on="weights")))


def _whole_graph_accuracy(path: Path, x, y, weights: dict[str, np.ndarray]) -> float:
    """Accuracy of the file with ``weights`` written over its initializers, the whole graph run."""
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": x})[0].argmax(1) == y).mean())


def _formula(model, w: np.ndarray, strength: float, index: int, repeat: int, top: float, channel_axis) -> np.ndarray:
    """The perturbed weight written out from each model's formula (not through NoiseModel.perturb)."""
    rng = np.random.default_rng([3, WEIGHT_STREAM, index, repeat])
    if isinstance(model, NoiseSpec):
        z = rng.standard_normal(w.shape, dtype=np.float32)
        if model.kind == "add":
            return w + np.float32(strength * np.abs(w).max()) * z
        return w * (1 + np.float32(strength) * z)
    if isinstance(model, Quant):
        n = 2 ** (round(-np.log2(strength)) - 1) - 1
        axes = tuple(i for i in range(w.ndim) if i != channel_axis)
        step = np.abs(w.astype(np.float64)).max(axis=axes, keepdims=True) / n
        return (np.clip(np.round(w / step), -n, n) * step).astype(np.float32)
    positions, u = model.draw(rng, w.shape, top)  # bit flips: the positions are the draws themselves
    bits = w.copy().view(np.uint32).ravel()
    for pos in positions[u < strength]:
        bits[pos // 32] ^= np.uint32(1 << int(pos % 32))
    return bits.view(np.float32).reshape(w.shape)


@pytest.mark.parametrize(("name", "grid", "options"), [
    ("add", "0.05,0.5", {}), ("mul", "0.3,1", {}), ("quant", "2,4", {}), ("bitflip", "1e-4,1e-3", {"format": "fp32"}),
])  # fmt: skip
def test_weight_walk_equals_the_whole_graph_with_perturbed_weights(residual, name, grid, options):
    """Every (point, level, repeat) accuracy of a weight walk — the graph from the layer on, fed its
    clean input and skip connection — equals the whole file run with that weight replaced by the
    formula's perturbed copy; the global sweep likewise with every weight replaced."""
    path, x, y = residual
    model = make_noise(name, **options)
    report = _report(path, x, y, model, grid, mode="both")
    weights = {p.tensor: p for p in find_weight_points(load_model(path).model)}
    initial = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    top = max(report["points"][0]["sigmas"])
    assert [p["op_type"] for p in report["points"]] == ["Conv", "Conv", "Gemm"]  # conv2 sits inside the skip
    for curve in report["points"]:
        p = weights[curve["tensor"]]
        for s, row in zip(curve["sigmas"], curve["accuracy"], strict=True):
            for r, acc in enumerate(row):
                w = _formula(model, initial[p.tensor], s, p.index, r, top, p.channel_axis)
                assert acc == pytest.approx(_whole_graph_accuracy(path, x, y, {p.tensor: w}), abs=1e-12), (curve["tensor"], s, r)
    glob = report["global"]
    for s, row in zip(glob["sigmas"], glob["accuracy"], strict=True):
        for r, acc in enumerate(row):
            every = {t: _formula(model, initial[t], s, p.index, r, top, p.channel_axis) for t, p in weights.items()}
            assert acc == pytest.approx(_whole_graph_accuracy(path, x, y, every), abs=1e-12)


def test_weight_noise_is_one_draw_per_repeat_shared_by_every_sample(residual):
    """The same draw for every batch of a repeat (so the batch size changes nothing), another one
    for each repeat, and the same one whichever other points are walked."""
    path, x, y = residual
    model = make_noise("add")
    a = _report(path, x, y, model, "0.2,0.6", repeats=3, batch_size=7)
    b = _report(path, x, y, model, "0.2,0.6", repeats=3, batch_size=150)
    c = _report(path, x, y, model, "0.2,0.6", repeats=3, at="1")
    assert [p["accuracy"] for p in a["points"]] == [p["accuracy"] for p in b["points"]]
    assert c["points"][0]["accuracy"] == a["points"][1]["accuracy"]
    rows = np.array(a["points"][1]["accuracy"])
    assert len({tuple(rows[:, r]) for r in range(3)}) == 3  # repeats differ


def test_quant_is_deterministic_and_reports_bits(residual):
    path, x, y = residual
    report = _report(path, x, y, Quant(), None, repeats=5)
    assert report["repeats"] == 1 and report["deterministic"] is True
    curve = report["points"][0]
    assert curve["levels"] == list(range(16, 0, -1))  # strengths ascending: bits descending
    assert curve["fewest_bits"] is not None and 1 <= curve["fewest_bits"] <= 16
    acc = np.array(curve["accuracy"])[:, 0]
    wide = acc[: 16 - curve["fewest_bits"] + 1]  # every width ≥ fewest_bits
    assert np.all(wide >= report["clean_accuracy"] - 0.01)


# ---- CLI: reports, plug-ins and bad input ------------------------------------------------------------


def test_same_seed_same_report(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        ran = wn("scan", "--on", "weights", "--noise", "bitflip", "--levels", "log:1e-5:1e-2:4", "--repeats", "2",
                 "--seed", "9", "--out", out, "--quiet")  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    assert a.read_text() == b.read_text()
    report = json.loads(a.read_text())
    assert report["on"] == "weights" and report["noise"] == {"kind": "bitflip", "format": "int8"}
    assert report["axis"]["name"] == "bit error rate"


PLUGIN = '''
import numpy as np
from wn_onnx.noise import Axis, NoiseModel


class Uniform(NoiseModel):
    """x + a·u, u uniform in [-1, 1]."""

    name = "uniform"
    axis = Axis("amplitude", default="log:1e-2:1e2:9")

    def draw(self, rng, shape, top):
        return [rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)]

    def perturb(self, x, strength, draws, ref):
        return (x + strength * draws[0]).astype(x.dtype)
'''


@pytest.mark.parametrize("on", ["weights", "activations"])
def test_a_plugin_model_from_a_file_scans_end_to_end(tmp_path, on):
    plugin = tmp_path / "uniform.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "r.json"
    ran = wn("scan", "--noise", f"{plugin}:Uniform", "--on", on, "--mode", "walking", "--repeats", "2", "--out", out)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    assert report["noise"] == {"kind": "uniform", "plugin": f"{plugin}:Uniform"}
    acc = [np.mean(a) for a in report["points"][0]["accuracy"]]
    assert acc[0] > 0.9 and acc[-1] < 0.5  # amplitude 100 destroys the first layer
    assert "amplitude" in ran.stdout


BROKEN = {
    "missing": None,
    "raises": "raise RuntimeError('no luck')\n",
    "exits": "import sys\nsys.exit(0)\n",
    "not_a_model": "class Uniform:\n    pass\n",
    "no_perturb": "from wn_onnx.noise import NoiseModel, Axis\nclass Uniform(NoiseModel):\n    name = 'u'\n    axis = Axis('a')\n"
                  "    def draw(self, rng, shape, top):\n        return []\n",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line(tmp_path, case):
    plugin = tmp_path / "plug.py"
    if BROKEN[case] is not None:
        plugin.write_text(BROKEN[case])
    ran = wn("scan", "--noise", f"{plugin}:Uniform", "--on", "weights", "--out", tmp_path / "r.json")
    assert ran.returncode == 2, (ran.returncode, ran.stderr)
    assert "noise model" in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_plugin_that_raises_while_running_is_one_line(tmp_path):
    plugin = tmp_path / "plug.py"
    plugin.write_text(PLUGIN.replace("return (x + strength * draws[0]).astype(x.dtype)", "raise ValueError('boom')"))
    ran = wn("scan", "--noise", f"{plugin}:Uniform", "--on", "weights", "--out", tmp_path / "r.json", "--quiet")
    assert ran.returncode == 2 and "boom" in ran.stderr and "uniform" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--noise", "gauss"], "unknown noise model"),
    (["--noise", "quant", "--levels", "0,4"], "bits must lie in [1, 32]"),
    (["--noise", "quant", "--levels", "8,33"], "bits must lie in [1, 32]"),
    (["--noise", "quant", "--levels", "2.5,4"], "whole numbers"),
    (["--noise", "bitflip", "--levels", "0,1e-3"], "bit error rate must lie in (0, 0.5]"),
    (["--noise", "bitflip", "--levels", "1e-3,0.6"], "bit error rate must lie in (0, 0.5]"),
    (["--noise", "add", "--format", "fp16"], "format does not apply"),
    (["--noise", "quant", "--on", "weights", "--at", "7"], "out of range"),
    (["--noise", "quant", "--on", "weights", "--at", "op:Relu"], "selects no noise point"),
    (["--noise", "quant", "--on", "weights", "--percentile", "99"], "--percentile clips activations"),
    (["--noise", "mul", "--on", "weights", "--repeats", "1"], "one repeat cannot tell the spread between chips"),
])  # fmt: skip
def test_bad_noise_input_is_one_line(tmp_path, args, message):
    ran = wn("scan", *args, "--out", tmp_path / "r.json")
    assert ran.returncode == 2, (ran.returncode, ran.stdout, ran.stderr)
    assert message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_model_without_weight_initializers_is_refused(tmp_path):
    """Weights fed as graph inputs cannot be perturbed: one line naming the model."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )  # fmt: skip
    path = tmp_path / "fed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ran = wn("points", path, "--on", "weights")
    assert ran.returncode == 2 and "no weight initializers" in ran.stderr, ran.stderr


def test_options_of_another_model_are_refused():
    with pytest.raises(ConfigError, match="per-tensor does not apply"):
        make_noise("bitflip", per_tensor=True)


STORED = Path(__file__).parent / "data" / "embedded_gaussian_reports.json"
GAUSSIAN_RUNS = {
    "add": ["--noise", "add"],
    "mul": ["--noise", "mul"],
    "mixed": ["--noise", "mixed", "--order", "add-first", "--sigma-ratio", "0.3"],
}


@pytest.mark.parametrize("kind", sorted(GAUSSIAN_RUNS))
def test_gaussian_reports_of_the_embedded_model_are_those_stored(tmp_path, kind):
    """add / mul / mixed on activations give the measurements (every σ, repeat and non-finite count)
    and configuration hash (resume keys) stored in tests/data: the same draws reach the same graph.
    (The fits are the fit's business: tests/test_fit.py.)"""
    out = tmp_path / "r.json"
    ran = wn("scan", *GAUSSIAN_RUNS[kind], "--sigmas", "log:1e-2:1e2:9", "--repeats", "2", "--out", out, "--quiet")
    assert ran.returncode == 0, ran.stderr
    report, stored = json.loads(out.read_text()), json.loads(STORED.read_text())[kind]
    assert report["config_hash"] == stored["config_hash"] and report["noise"] == stored["noise"]
    for got, want in zip([*report["points"], report["global"]], [*stored["points"], stored["global"]], strict=True):
        assert {k: got[k] for k in ("sigmas", "accuracy", "nonfinite")} == {k: want[k] for k in ("sigmas", "accuracy", "nonfinite")}


@pytest.mark.parametrize(("args", "message"), [
    (["--on", "weights", "--noise", "mul"], "same perturbed weights"),
    (["--noise", "bitflip", "--mode", "walking"], "does not average away"),
])  # fmt: skip
def test_plan_refuses_noise_that_repeats_do_not_average(tmp_path, args, message):
    report = tmp_path / "r.json"
    ran = wn("scan", *args, "--levels", "1e-3,1e-2,0.1", "--repeats", "2", "--out", report, "--quiet")
    assert ran.returncode == 0, ran.stderr
    ran = wn("plan", report, "--budget", "8")
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_check_gates_a_weight_scan(tmp_path, digits):
    """check --on weights scans the weights and judges μ of each layer; --min-mu above every μ fails."""
    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    common = ["check", model, "--data", data, "--on", "weights", "--noise", "mul", "--levels", "log:1e-1:1e2:7",
              "--repeats", "3", "--mode", "walking"]  # fmt: skip
    assert wn(*common, "--min-mu", "0.01").returncode == 0
    failed = wn(*common, "--min-mu", "1000")
    assert failed.returncode == 1 and "mul noise on weights" in failed.stdout


def test_weight_scans_adaptive_and_in_processes_measure_what_the_grid_measures(tmp_path, digits):
    """--adaptive measures a subset of the grid's levels with the grid's own numbers there, and
    --jobs 2 gives the serial report's curves: a weight's draw depends on its point and repeat only."""
    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    common = ["scan", model, "--data", data, "--on", "weights", "--noise", "mul", "--levels", "log:1e-2:1e2:17",
              "--repeats", "3", "--mode", "walking", "--quiet"]  # fmt: skip
    reports = {}
    for name, extra in (("grid", []), ("adaptive", ["--adaptive"]), ("jobs", ["--jobs", "2"])):
        out = tmp_path / f"{name}.json"
        ran = wn(*common, *extra, "--out", out)
        assert ran.returncode == 0, ran.stderr
        reports[name] = json.loads(out.read_text())
    assert [p["accuracy"] for p in reports["jobs"]["points"]] == [p["accuracy"] for p in reports["grid"]["points"]]
    for full, part in zip(reports["grid"]["points"], reports["adaptive"]["points"], strict=True):
        rows = dict(zip(full["sigmas"], full["accuracy"], strict=True))
        assert len(part["sigmas"]) < len(full["sigmas"])
        assert all(rows[s] == a for s, a in zip(part["sigmas"], part["accuracy"], strict=True))


DOCS = Path(__file__).parents[1] / "docs"


def test_the_documented_plugin_example_is_the_shipped_file_and_scans(tmp_path):
    """docs/noise-models.md shows docs/examples/uniform_noise.py whole, and that file scans the
    embedded default on weights with every layer falling (amplitude up to 100 × max|W|)."""
    example = (DOCS / "examples" / "uniform_noise.py").read_text()
    assert f"```python\n{example}```" in (DOCS / "noise-models.md").read_text()
    out = tmp_path / "r.json"
    ran = wn("scan", "--noise", f"{DOCS / 'examples' / 'uniform_noise.py'}:Uniform", "--on", "weights",
             "--repeats", "3", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    assert report["noise"]["kind"] == "uniform" and report["axis"]["name"] == "amplitude"
    assert all(p["status"] in ("ok", "bracketed") for p in report["points"]), [p["status"] for p in report["points"]]


def _quantised_everywhere(path, tensors: list[str], bits: int, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the file with every consumer of each tensor reading it quantised to ``bits``
    (per tensor, full scale its clean max |value| on ``x``), written by plain onnx edits."""
    from onnx import helper

    probe = onnx.load(str(path))
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    values = dict(zip([o.name for o in probe.graph.output], ort.InferenceSession(probe.SerializeToString(),
                  providers=["CPUExecutionProvider"]).run(None, {"input": x}), strict=True))  # fmt: skip
    proto = onnx.load(str(path))
    n = 2 ** (bits - 1) - 1
    added = []
    for k, t in enumerate(tensors):
        step = float(np.abs(values[t]).max()) / n
        for node in proto.graph.node:
            node.input[:] = [f"q{k}" if i == t else i for i in node.input]
        proto.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), f"q{k}_{name}")
                                        for name, v in (("s", step), ("n", n), ("m", -n))])  # fmt: skip
        added += [helper.make_node("Div", [t, f"q{k}_s"], [f"q{k}_d"]), helper.make_node("Round", [f"q{k}_d"], [f"q{k}_r"]),
                  helper.make_node("Clip", [f"q{k}_r", f"q{k}_m", f"q{k}_n"], [f"q{k}_c"]),
                  helper.make_node("Mul", [f"q{k}_c", f"q{k}_s"], [f"q{k}"])]  # fmt: skip
    if "logits" in tensors:  # the scored output itself is quantised: read it through an Identity
        k = tensors.index("logits")
        proto.graph.output[0].name = f"q{k}"
    nodes = list(proto.graph.node) + added
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    import onnx_ir as ir

    model = ir.from_proto(proto)
    model.graph.sort()
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": x})[0].argmax(1) == y).mean())


def test_global_quantisation_on_activations_equals_plain_graph_edits(digits, tmp_path):
    """The staged global sweep of a numpy-applied model (every point quantised at once) gives the
    accuracy of the file with a quantiser after every point written by plain onnx edits."""
    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "r.json"
    ran = wn("scan", model, "--data", data, "--noise", "quant", "--levels", "3,5,8", "--mode", "global", "--out", out, "--quiet")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    tensors = [p["tensor"] for p in json.loads(wn("points", model, "--json").stdout)["points"]]
    for bits, row in zip((8, 5, 3), report["global"]["accuracy"], strict=True):
        assert row[0] == pytest.approx(_quantised_everywhere(model, tensors, bits, x, y), abs=1e-12), bits
    assert report["global"]["accuracy"][-1][0] < report["clean_accuracy"] - 0.05  # 3 bits everywhere: a real change


def test_check_reads_a_bits_floor_as_the_most_bits_a_layer_may_need(tmp_path, digits):
    """quant on weights: --min-mu B is the largest bit width allowed at μ: the layers that keep half
    their accuracy at 1 bit pass max 2 bits; the global curve, whose μ lies between 1 and 2 bits
    (judged on the bracket's wide end), fails max 1 bit."""
    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    common = ["check", model, "--data", data, "--on", "weights", "--noise", "quant"]
    passed = wn(*common, "--min-mu", "2")
    assert passed.returncode == 0 and "max μ 2 bits" in passed.stdout and "| 1 bits |" in passed.stdout, passed.stdout
    failed = wn(*common, "--min-mu", "1")
    assert failed.returncode == 1 and "global:" in failed.stdout and "> max μ 1 bits" in failed.stdout, failed.stdout


def test_resume_takes_every_stored_weight_curve(tmp_path, monkeypatch):
    """--resume on a weight scan takes the stored curves (their refit, with the repeat shift, is
    what was stored), and the report is the same."""
    import wn_onnx.executors as executors

    out = tmp_path / "r.json"
    args = ["scan", "--on", "weights", "--noise", "mul", "--levels", "log:1e-1:1e2:7", "--repeats", "3", "--mode",
            "walking", "--out", out, "--quiet"]  # fmt: skip
    assert wn(*args).returncode == 0
    first = out.read_text()
    measured = []
    real = executors.Serial.walk
    monkeypatch.setattr(executors.Serial, "walk", lambda self, todo, *a, **k: (measured.extend(todo), real(self, todo, *a, **k))[1])
    assert wn(*args, "--resume").returncode == 0
    assert measured == [] and out.read_text() == first


def test_a_tied_weight_is_perturbed_wherever_it_is_read(tmp_path):
    """One weight read by two MatMuls on parallel branches: its walk perturbs both reads (the whole
    graph), so walking it alone equals the global sweep of it alone, draw for draw."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["input", "w"], ["a"]), helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["b"]), helper.make_node("Add", ["a", "b"], ["logits"])]  # fmt: skip
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])], [w])  # fmt: skip
    model = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    x = rng.standard_normal((300, 6)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0].argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "r.json"
    ran = wn("scan", model, "--data", tmp_path / "d.npz", "--on", "weights", "--noise", "mul", "--levels", "0.3,1,3",
             "--repeats", "3", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    assert len(report["points"]) == 1 and report["points"][0]["accuracy"] == report["global"]["accuracy"]
    ran = wn("scan", model, "--data", tmp_path / "d.npz", "--on", "weights", "--noise", "mul", "--adc-bits", "8",
             "--mode", "global", "--quiet")  # fmt: skip
    assert ran.returncode == 2 and "read by several layers" in ran.stderr, ran.stderr


def test_analyze_mixed_on_weights_reduces_to_multiplicative_weight_noise(tmp_path, digits):
    """A mixed-noise map at a weight point: with σ_add = 0 (mul-first) each cell is the
    multiplicative weight scan at that σ_mul — the same chips (the first draw of a mixed draw is
    the multiplicative one) — and σ_add > 0 only lowers it there."""
    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out, scan = tmp_path / "m.json", tmp_path / "s.json"
    ran = wn("analyze", "mixed", model, "--data", data, "--at", "1", "--on", "weights", "--order", "mul-first",
             "--sigma-mul-grid", "0.5,2", "--sigma-add-grid", "0,1", "--repeats", "3", "--out", out)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    grid = json.loads(out.read_text())["grids"][0]
    assert grid["on"] == "weights" and grid["point"]["tensor"] == "8.weight"
    ran = wn("scan", model, "--data", data, "--on", "weights", "--noise", "mul", "--levels", "0.5,2", "--repeats", "3",
             "--at", "1", "--mode", "walking", "--out", scan, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    walked = np.mean(json.loads(scan.read_text())["points"][0]["accuracy"], axis=1)
    assert [row[0] for row in grid["accuracy"]] == pytest.approx(list(walked), abs=1e-12)
    assert all(row[1] <= row[0] for row in grid["accuracy"])
