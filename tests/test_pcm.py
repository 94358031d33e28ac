"""The PCM device model (wn_onnx/noise/pcm.py) against a numpy implementation of the published
formulas written out here, drift compensation, and what a time sweep shows on a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import wn
from wn_onnx.noise import PCM, Reference

G_MAX, YEAR = 25.0, 365.25 * 86400


def reference_conductance(g_t: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """Nandakumar et al. / aihwkit's PCMLikeNoiseModel, formula by formula (µS)."""
    r = g_t / G_MAX
    sigma_prog = (0.26348 + 1.9650 * r - 1.1731 * r**2) * G_MAX / 25.0
    g_prog = np.maximum(g_t + sigma_prog * rng.standard_normal(g_t.shape), 0)
    g_r = np.maximum(r, 1e-7)
    mu_nu = np.clip(-0.0155 * np.log(g_r) + 0.0244, 0.049, 0.1)
    sd_nu = np.clip(-0.0125 * np.log(g_r) - 0.0059, 0.008, 0.045)
    nu = np.abs(mu_nu + sd_nu * rng.standard_normal(g_t.shape))
    t1 = t + 20.0
    g_drift = g_prog * (t1 / 20.0) ** (-nu)
    q_s = np.minimum(0.0088 / np.maximum((g_prog / G_MAX) ** 0.65, 1e-3), 0.2)
    sigma_read = q_s * np.sqrt(np.log((t1 + 250e-9) / (2 * 250e-9)))
    return np.maximum(g_drift + np.abs(g_drift) * sigma_read * rng.standard_normal(g_t.shape), 0)


@pytest.mark.parametrize("t", [1.0, 3600.0, YEAR])
def test_conductance_statistics_match_the_formulas(t):
    """Mean and standard deviation of g⁺ and g⁻ for weights at 0.1, 0.5 and 1 of w_max, 20,000
    devices each, within 5 standard errors of the reference; the unused device of each pair is
    programmed with noise too (its mean is above 0)."""
    levels = np.array([0.1, 0.5, 1.0])
    w = np.repeat(levels, 20_000)
    model = PCM(compensation="none")
    draws = model.draw(np.random.default_rng(1), w.shape, t)
    (_, programmed_minus), (g_plus, g_minus) = model.conductances(w, t, draws, w_max=1.0)
    rng = np.random.default_rng(2)
    want_plus = reference_conductance(w * G_MAX, t, rng)
    want_minus = reference_conductance(np.zeros_like(w), t, rng)
    for got, want in ((g_plus, want_plus), (g_minus, want_minus)):
        for level in levels:
            a, b = got[w == level], want[w == level]
            se_mean = np.sqrt(a.var() / a.size + b.var() / b.size)
            assert abs(a.mean() - b.mean()) < 5 * se_mean + 1e-12, (t, level, a.mean(), b.mean())
            se_sd = b.std() * np.sqrt(2.0 / b.size)
            assert abs(a.std() - b.std()) < 5 * se_sd * np.sqrt(2) + 1e-12, (t, level, a.std(), b.std())
    # the unused device is programmed with noise too: E[max(σ_prog(0)·z, 0)] = 0.26348/√(2π) µS
    expected = 0.26348 / np.sqrt(2 * np.pi)
    assert abs(programmed_minus.mean() - expected) < 5 * programmed_minus.std() / np.sqrt(programmed_minus.size)


@pytest.mark.parametrize("rows", ["random", "zero-mean"])
def test_drift_compensation_restores_the_output_scale_at_one_year(rows):
    """A 64×64 layer at 1 year, non-negative inputs (activations after a ReLU), the mean |W_t·x|
    over 30 programmed chips against the programmed layer's |W_prog·x|: global compensation (an
    all-ones readout) within 2 %; one-hot readouts (aihwkit's) within 4 %, also when every row sums
    to zero — where the all-ones readout sees no signal and leaves the drift in; without
    compensation drift shrinks the output by more than 20 %."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)) * 0.1
    if rows == "zero-mean":
        w -= w.mean(axis=1, keepdims=True)
    x = np.maximum(rng.standard_normal((64, 500)), 0.0)
    ref = Reference.of_weight(w, 0)
    expected = {"global": (0.98, 1.02) if rows == "random" else (0.0, 0.9), "onehot": (0.97, 1.04), "none": (0.0, 0.8)}
    for compensation, (low, high) in expected.items():
        model, ratios = PCM(compensation=compensation), []
        for _ in range(30):  # one draw's ratio scatters by about 2 %: the mean over 30 chips
            draws = model.draw(rng, w.shape, YEAR)
            (plus, minus), _ = model.conductances(w, YEAR, draws, ref.absmax)
            w_prog = (plus - minus) * ref.absmax / G_MAX
            ratios.append(np.abs(model.perturb(w, YEAR, draws, ref) @ x).mean() / np.abs(w_prog @ x).mean())
        assert low <= np.mean(ratios) <= high, (compensation, np.mean(ratios))


def test_accuracy_falls_with_time_and_compensation_keeps_more(tmp_path):
    """The embedded digits model, every weight on PCM: without compensation the accuracy at 1 year
    is far below that at 1 s; global drift compensation keeps more of it at 1 year."""
    acc = {}
    for compensation in ("none", "global"):
        out = tmp_path / f"{compensation}.json"
        ran = wn("scan", "--noise", "pcm", "--on", "weights", "--mode", "global", "--levels", "1s,1y", "--repeats", "3",
                 "--drift-compensation", compensation, "--out", out, "--quiet")  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        acc[compensation] = np.mean(json.loads(out.read_text())["global"]["accuracy"], axis=1)
    assert acc["none"][1] < acc["none"][0] - 0.3
    assert acc["global"][1] > acc["none"][1] + 0.3


@pytest.mark.parametrize(("args", "message"), [
    (["--levels", "-1,1h"], "time grid '-1,1h' must hold finite values >= 0"),
    (["--levels", "0,1h"], "time must lie in (0"),
    (["--g-max", "0"], "g-max must be a finite number > 0"),
    (["--prog-scale", "nan"], "prog-scale must be a finite number"),
    (["--on", "activations"], "acts on weights, not on activations"),
])  # fmt: skip
def test_bad_pcm_input_is_one_line(tmp_path, args, message):
    base = ["scan", "--noise", "pcm", "--on", "weights"]
    ran = wn(*(base[:3] + args if "--on" in args else base + args), "--out", tmp_path / "r.json")
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr


@pytest.fixture(scope="module")
def pcm_report(tmp_path_factory, digits):
    """A walking pcm scan (no drift compensation) of the embedded digits model, and its data."""
    folder = tmp_path_factory.mktemp("digital")
    model, x, y = digits
    data = folder / "d.npz"
    np.savez(data, x=x, y=y)
    report = folder / "pcm.json"
    ran = wn("scan", model, "--data", data, "--noise", "pcm", "--on", "weights", "--drift-compensation", "none",
             "--levels", "log:1s:10y:7", "--repeats", "4", "--mode", "walking", "--out", report, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return model, data, report


def test_every_layer_digital_is_the_clean_model_and_digital_layers_help(pcm_report, tmp_path):
    """plan --digital 4 --evaluate on the 4-layer MLP at 1 day: K = 0 is the all-analog accuracy,
    K = 4 the clean accuracy exactly; keeping the least robust layer digital gains accuracy, and the
    guided choice is never worse than the first K layers by more than the chips' spread."""
    model, data, report = pcm_report
    out, page = tmp_path / "digital.json", tmp_path / "digital.html"
    ran = wn("plan", report, "--digital", "4", "--evaluate", "--model", model, "--data", data, "--at-time", "1d",
             "--repeats", "4", "--out", out, "--html", page)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "accuracy per digital layer" in page.read_text() and "data:image/png;base64," in page.read_text()
    ev = json.loads(out.read_text())["evaluation"]
    rows = ev["rows"]
    assert [r["digital"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["guided_accuracy"] == pytest.approx(ev["clean_accuracy"]) and rows[-1]["guided_std"] == 0
    assert rows[1]["guided_accuracy"] > rows[0]["guided_accuracy"] + 0.1
    for r in rows:
        assert r["guided_accuracy"] >= r["uniform_accuracy"] - 2 * max(r["guided_std"], r["uniform_std"], 0.01)
    assert "first K layers" in ran.stdout


def test_bad_digital_plans_are_one_line(pcm_report, tmp_path):
    report = pcm_report[2]
    ran = wn("plan", report, "--digital", "5")
    assert ran.returncode == 2 and "has 4 weight layers" in ran.stderr, ran.stderr
    activations = tmp_path / "a.json"
    assert wn("scan", "--levels", "0.1,1,10", "--repeats", "2", "--out", activations, "--quiet").returncode == 0
    ran = wn("plan", activations, "--digital", "1")
    assert ran.returncode == 2 and "weight-noise report" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


def test_figures_read_time_and_bits_in_their_units(pcm_report, tmp_path):
    """Curves of a pcm report are drawn against time since programming with 1 s … 10 y ticks and
    μ in days or years; a quant report's against bits, μ in bits, a bound written as one."""
    from wn_onnx.results.figures import curves_figure, mu_figure

    report = json.loads(pcm_report[2].read_text())
    fig = curves_figure(report)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time since programming (s)"
    assert {"1 s", "1 h", "1 d", "1 y"} <= {t.get_text() for t in ax.get_xticklabels()}
    assert any(unit in ax.get_title() for unit in (" d [", " y [", " h ["))
    assert mu_figure([report]).axes[0].get_ylabel() == "μ (midpoint time since programming)"
    out = tmp_path / "q.json"
    assert wn("scan", "--noise", "quant", "--on", "weights", "--out", out, "--quiet").returncode == 0
    quant = json.loads(out.read_text())
    ax = curves_figure(quant).axes[0]
    assert ax.get_xlabel() == "bits (fewer is worse)" and {"1", "15"} <= {t.get_text() for t in ax.get_xticklabels()}
    assert "bits [" in ax.get_title()


# ---- converters ---------------------------------------------------------------------------------------


def _with_converters(path, bits: int, layers: list[tuple[str, str]], x: np.ndarray) -> float:
    """Agreement with the clean predictions of the file with b-bit DAC/ADC written around each layer
    ``(data input, output)`` by plain onnx edits, the ranges measured here on ``x``."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    names = [n for layer in layers for n in layer]
    probe = onnx.load(str(path))
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    run = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in run.get_outputs()], run.run(None, {"input": x}), strict=True))
    n = max(2 ** (bits - 1) - 1, 1)
    nodes = list(proto.graph.node)
    for k, (data, out) in enumerate(layers):
        for tag, name in (("dac", data), ("adc", out)):
            step = float(np.abs(values[name]).max()) / n
            proto.graph.initializer.extend([numpy_helper.from_array(np.array(step, np.float32), f"{tag}{k}_s"),
                                            numpy_helper.from_array(np.array(n, np.float32), f"{tag}{k}_n"),
                                            numpy_helper.from_array(np.array(-n, np.float32), f"{tag}{k}_m")])  # fmt: skip
        layer = next(node for node in nodes if out in node.output)
        layer.input[list(layer.input).index(data)] = f"dac{k}_q"
        layer.output[0] = f"adc{k}_raw"
        rounding = "Sign" if bits == 1 else "Round"  # one bit: the sign alone
        quant = [helper.make_node("Div", [data, f"dac{k}_s"], [f"dac{k}_d"]),
                 helper.make_node(rounding, [f"dac{k}_d"], [f"dac{k}_r"]),
                 helper.make_node("Clip", [f"dac{k}_r", f"dac{k}_m", f"dac{k}_n"], [f"dac{k}_c"]),
                 helper.make_node("Mul", [f"dac{k}_c", f"dac{k}_s"], [f"dac{k}_q"]),
                 helper.make_node("Div", [f"adc{k}_raw", f"adc{k}_s"], [f"adc{k}_d"]),
                 helper.make_node(rounding, [f"adc{k}_d"], [f"adc{k}_r"]),
                 helper.make_node("Clip", [f"adc{k}_r", f"adc{k}_m", f"adc{k}_n"], [f"adc{k}_c"]),
                 helper.make_node("Mul", [f"adc{k}_c", f"adc{k}_s"], [out])]  # fmt: skip
        nodes[nodes.index(layer):nodes.index(layer)] = quant[:4]
        nodes[nodes.index(layer) + 1:nodes.index(layer) + 1] = quant[4:]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    clean = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    noisy = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return float((noisy.argmax(1) == clean.argmax(1)).mean())


def test_converters_equal_plain_graph_edits_and_vanish_at_16_bits(digits, tmp_path):
    """Label-free (agreement with the clean predictions), the converters model on the embedded MLP:
    every walked layer and the global sweep equal the file with DAC/ADC written by plain onnx edits
    (ranges measured independently); at 16 bits the predictions are the clean ones, at 1 bit not."""
    from wn_onnx.graph_passes.weights import find_weight_points
    from wn_onnx.io.model import load_model

    model, x, y = digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "r.json"
    ran = wn("scan", model, "--data", data, "--label-free", "--on", "weights", "--noise", "converters",
             "--levels", "1,4,16", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    layers = [(p.data, p.output) for p in find_weight_points(load_model(model).model)]
    for bits, row in zip((16, 4, 1), range(3), strict=True):  # strengths ascending: bits descending
        for k, curve in enumerate(report["points"]):
            assert curve["accuracy"][row][0] == pytest.approx(_with_converters(model, bits, [layers[k]], x), abs=1e-12)
        assert report["global"]["accuracy"][row][0] == pytest.approx(_with_converters(model, bits, layers, x), abs=1e-12)
    assert report["global"]["accuracy"][0][0] == 1.0 and report["global"]["accuracy"][2][0] < 0.9


def test_converters_combine_with_pcm_and_bad_settings_are_one_line(tmp_path):
    out = tmp_path / "r.json"
    ran = wn("scan", "--on", "weights", "--noise", "pcm", "--levels", "1s,1y", "--adc-bits", "8", "--out-noise", "0.01",
             "--repeats", "2", "--mode", "global", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    assert report["converters"] == {"adc_bits": 8, "out_noise": 0.01}
    for args, message in ((["--on", "weights", "--dac-bits", "0"], "--dac-bits must be a whole number in [1, 32]"),
                          (["--on", "weights", "--adc-bits", "33"], "--adc-bits must be a whole number in [1, 32]"),
                          (["--on", "weights", "--out-noise", "-1"], "--out-noise must be a finite number >= 0"),
                          (["--dac-bits", "4"], "belong to analog layers: scan --on weights"),
                          (["--on", "weights", "--noise", "converters", "--dac-bits", "4", "--adc-bits", "4"], "leave one free")):  # fmt: skip
        ran = wn("scan", *args, "--out", tmp_path / "bad.json")
        assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, (args, ran.stderr)


def _analog_accuracy(path, x, y, weights: dict[str, np.ndarray], layers: list[tuple[int, str]], out_noise: float,
                     seed: int, repeat: int, adc_bits: int | None) -> float:  # fmt: skip
    """Accuracy of the file with ``weights`` written over its initializers and, by plain onnx edits
    after each layer ``(point index, output)``, out_noise·max|clean output|·z added (then a b-bit
    ADC): z from the converter stream's first generator, one block of 256 samples
    ``[seed, CONVERTER_STREAM, index, repeat, 0]`` (engine/draws.py), the range measured here."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from wn_onnx.engine.draws import CONVERTER_STREAM

    assert len(x) <= 256  # one generator's block holds every sample
    probe = onnx.load(str(path))
    probe.graph.output.extend(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None) for _, out in layers)
    run = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    clean = dict(zip([o.name for o in run.get_outputs()], run.run(None, {"input": x}), strict=True))
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    feeds, nodes = {"input": x}, list(proto.graph.node)
    for index, out in layers:
        top = float(np.abs(clean[out]).max())
        rng = np.random.default_rng([seed, CONVERTER_STREAM, index, repeat, 0])
        feeds[f"z{index}"] = rng.standard_normal((256, clean[out].shape[1]), dtype=np.float32)[: len(x)]
        proto.graph.input.append(helper.make_tensor_value_info(f"z{index}", onnx.TensorProto.FLOAT, ["N", clean[out].shape[1]]))
        scales = {"sd": out_noise * top}
        if adc_bits is not None:
            n = 2 ** (adc_bits - 1) - 1
            scales |= {"step": top / n, "n": n, "m": -n}
        proto.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), f"{k}{index}") for k, v in scales.items())
        layer = next(node for node in nodes if out in node.output)
        layer.output[0] = f"raw{index}"
        noisy = f"noisy{index}" if adc_bits is not None else out
        added = [helper.make_node("Mul", [f"z{index}", f"sd{index}"], [f"scaled{index}"]),
                 helper.make_node("Add", [f"raw{index}", f"scaled{index}"], [noisy])]  # fmt: skip
        if adc_bits is not None:
            added += [helper.make_node("Div", [noisy, f"step{index}"], [f"d{index}"]),
                      helper.make_node("Round", [f"d{index}"], [f"r{index}"]),
                      helper.make_node("Clip", [f"r{index}", f"m{index}", f"n{index}"], [f"c{index}"]),
                      helper.make_node("Mul", [f"c{index}", f"step{index}"], [out])]  # fmt: skip
        at = nodes.index(layer) + 1
        nodes[at:at] = added
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    logits = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float((logits.argmax(1) == y).mean())


@pytest.mark.parametrize("adc_bits", [None, 4])
def test_output_noise_equals_plain_graph_edits(tmp_path, adc_bits):
    """--out-noise 0.3 with multiplicative weight noise on the two-layer chain: every (layer, σ,
    repeat) accuracy of the walk, and of the global sweep, equals the file with the formula's
    perturbed weights and, after each analog layer, 0.3·max|clean output|·z added by plain onnx
    edits (before a 4-bit ADC), z the converter stream's draws — batches of 64 cut the 200 samples
    across one generator's block; the noise changes the accuracy."""
    import onnx
    from onnx import numpy_helper

    from wn_onnx.engine.draws import WEIGHT_STREAM

    model = _chain(tmp_path / "chain.onnx")
    data = np.load(model.with_suffix(".npz"))
    x, y = data["x"], data["y"]
    out, seed = tmp_path / "r.json", 3
    adc = [] if adc_bits is None else ["--adc-bits", str(adc_bits)]
    ran = wn("scan", model, "--data", model.with_suffix(".npz"), "--on", "weights", "--noise", "mul", "--levels", "0.05,0.5",
             "--out-noise", "0.3", *adc, "--repeats", "2", "--seed", seed, "--batch-size", "64", "--mode", "both",
             "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(out.read_text())
    initial = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    layers = [(0, "h"), (1, "logits")]

    def weights(sigma: float, repeat: int, analog: list[int]) -> dict[str, np.ndarray]:
        perturbed = dict(initial)
        for index in analog:
            name = f"w{index + 1}"
            z = np.random.default_rng([seed, WEIGHT_STREAM, index, repeat]).standard_normal(initial[name].shape, dtype=np.float32)
            perturbed[name] = initial[name] * (1 + np.float32(sigma) * z)
        return perturbed

    quiet = []
    for curve, analog in [*((c, [k]) for k, c in enumerate(report["points"])), (report["global"], [0, 1])]:
        for sigma, row in zip(curve["sigmas"], curve["accuracy"], strict=True):
            for r, acc in enumerate(row):
                w = weights(sigma, r, analog)
                want = _analog_accuracy(model, x, y, w, [layers[k] for k in analog], 0.3, seed, r, adc_bits)
                assert acc == pytest.approx(want, abs=1e-12), (analog, sigma, r)
                quiet.append(_analog_accuracy(model, x, y, w, [layers[k] for k in analog], 0.0, seed, r, adc_bits))
    assert quiet != [a for c in [*report["points"], report["global"]] for row in c["accuracy"] for a in row]


def test_output_noise_has_the_documented_sigma(tmp_path):
    """The noise --out-noise 0.05 adds to a Gemm's output (bias and alpha included; weights exact):
    mean 0 and standard deviation 0.05·r_out, r_out the largest |clean output| over every sample
    and channel of the data — within 5 standard errors overall (8,000 values) and for each
    channel in each batch (500 values), where the channels' and batches' own maxima lie far
    below r_out (the last batch's inputs are 4 times larger)."""
    import onnx
    import onnxruntime as ort

    from wn_onnx.engine import Engine, SweepSettings
    from wn_onnx.graph_passes.weights import find_weight_points
    from wn_onnx.io.data import Dataset
    from wn_onnx.io.model import load_model
    from wn_onnx.noise import NoiseSpec
    from wn_onnx.noise.converters import Converters

    path = tmp_path / "gemm.onnx"
    onnx.save(_layer_model("Gemm"), str(path))
    x = np.random.default_rng(12).standard_normal((200, 8)).astype(np.float32)
    x[150:] *= 4
    clean = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    r_out, repeats, size = float(np.abs(clean).max()), 10, 50
    loaded = load_model(path)
    st = SweepSettings(np.array([0.1]), NoiseSpec("mul"), repeats, seed=1, batch_size=size,
                       converters=Converters(out_noise=0.05))  # fmt: skip
    ev = Engine(loaded, ["CPUExecutionProvider"], threads=1).walker(find_weight_points(loaded.model)[0],
                                                                     Dataset(x, None, "arrays"), st)  # fmt: skip
    noise = np.empty((repeats, *clean.shape))
    for r in range(repeats):
        for b, first in enumerate(range(0, len(x), size)):
            ev.start(b, first, x[first : first + size])
            exact = np.zeros(1)  # σ_mul = 0: the weights unperturbed, the output noise alone
            noise[r, first : first + size] = next(ev.logits(ev.noise((r,)), exact, exact, True)) - clean[first : first + size]
    sd = 0.05 * r_out
    assert abs(noise.mean()) < 5 * sd / np.sqrt(noise.size)
    assert abs(noise.std() / sd - 1) < 5 / np.sqrt(2 * noise.size)
    batches = noise.reshape(repeats, len(x) // size, size, -1)
    ratios = batches.std(axis=(0, 2)) / sd  # [batch, channel]
    assert np.all(np.abs(ratios - 1) < 5 / np.sqrt(2 * repeats * size)), ratios
    local = np.abs(clean).reshape(len(x) // size, size, -1).max(axis=1) / r_out
    assert local[:3].max() < 0.5 and local.min() < 0.2, local  # per-batch or per-channel ranges would show


# ---- per-sample read noise ----------------------------------------------------------------------------


def _layer_model(op: str):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    if op == "Gemm":
        w, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)
        shapes = (["N", 8], ["N", 4])
    else:
        w, b = rng.standard_normal((6, 2, 3, 3)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=2, strides=[2, 2])
        shapes = (["N", 4, 7, 7], ["N", 6, 4, 4])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes[0])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes[1])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Gemm", "Conv"])
def test_read_noise_pass_adds_the_propagated_standard_deviation(op):
    """y + √(L_var(x²))·z: with z = 1 the added noise is exactly the standard deviation of
    (W + ΔW)·x for independent ΔW of variance V per weight — computed here with the same layer
    (same attributes, Gemm's alpha squared, no bias) run by onnxruntime on x² and V."""
    import onnx
    import onnx_ir as ir
    import onnxruntime as ort
    from onnx import numpy_helper

    from wn_onnx.graph_passes.read_noise import ReadNoisePass
    from wn_onnx.graph_passes.weights import WeightsAsInputsPass

    proto = _layer_model(op)
    w = numpy_helper.to_array(proto.graph.initializer[0])
    x = np.random.default_rng(6).standard_normal((5, *[d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:])).astype(np.float32)
    var = np.random.default_rng(7).uniform(0.01, 0.2, w.shape).astype(np.float32)
    model = ir.from_proto(proto)
    WeightsAsInputsPass(["w"])(model)
    ReadNoisePass(["w"])(model)
    noisy = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    clean = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    z = np.ones_like(clean)
    got = noisy.run(None, {"x": x, "w": w, "wn_read_var_0": var, "wn_read_z_0": z})[0] - clean
    plain = onnx.load_from_string(proto.SerializeToString())
    plain.graph.node[0].input.pop()  # no bias
    for a in plain.graph.node[0].attribute:
        if a.name == "alpha":
            a.f = a.f**2
    del plain.graph.initializer[:]
    plain.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, list(w.shape)))
    sd = np.sqrt(ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
                 .run(None, {"x": x**2, "w": var})[0])  # fmt: skip
    np.testing.assert_allclose(got, sd, rtol=1e-5, atol=1e-6)


def test_read_variance_matches_repeated_reads_of_the_devices():
    """The per-weight read variance equals the variance of w over repeated reads of the same
    programmed and drifted devices (the read formula written out here, 4,000 reads), for weights
    whose devices sit far from 0 µS (where the clip at 0 is rare)."""
    model = PCM(compensation="none", read_noise="per-sample")
    w = np.linspace(0.5, 1.0, 50)
    draws = model.draw(np.random.default_rng(8), w.shape, YEAR)
    variance = model.read_variance(w, YEAR, draws, Reference.of_weight(w, None))
    programmed, drifted = model.conductances(w, YEAR, draws, 1.0, read=False)
    rng, reads = np.random.default_rng(9), []
    for _ in range(4000):
        pair = []
        for g_p, g_d in zip(programmed, drifted, strict=True):
            q_s = np.minimum(0.0088 / np.maximum((g_p / G_MAX) ** 0.65, 1e-3), 0.2)
            sigma = q_s * np.sqrt(np.log((YEAR + 20.0 + 250e-9) / (2 * 250e-9)))
            pair.append(np.maximum(g_d + np.abs(g_d) * sigma * rng.standard_normal(w.shape), 0))
        reads.append((pair[0] - pair[1]) / G_MAX)
    empirical = np.var(np.array(reads), axis=0)
    assert np.allclose(empirical, variance, rtol=0.15), (empirical[:3], variance[:3])


def test_per_sample_read_noise_scans_and_differs_from_one_read_per_chip(tmp_path):
    """--read-noise per-sample is recorded, changes the numbers, and a sample's numbers do not
    depend on the batch size (its read noise is drawn per sample)."""
    reports = {}
    for name, extra in (("repeat", []), ("per-sample", ["--read-noise", "per-sample"]),
                        ("small-batches", ["--read-noise", "per-sample", "--batch-size", "7"])):  # fmt: skip
        out = tmp_path / f"{name}.json"
        ran = wn("scan", "--on", "weights", "--noise", "pcm", "--read-scale", "20", "--levels", "1d,1y", "--repeats", "2",
                 "--mode", "walking", *extra, "--out", out, "--quiet")  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        reports[name] = json.loads(out.read_text())
    assert reports["per-sample"]["noise"]["read_noise"] == "per-sample" and "read_noise" not in reports["repeat"]["noise"]
    acc = {k: [p["accuracy"] for p in r["points"]] for k, r in reports.items()}
    assert acc["per-sample"] != acc["repeat"] and acc["per-sample"] == acc["small-batches"]


def _chain(path, dtype=np.float32, zero_branch: bool = False, scale: float = 1.0):
    """x → MatMul(w1) → MatMul(w2) → logits: one analog layer feeding the next directly, the last a
    graph output (``zero_branch``: plus x · 0 added to it, a layer whose weights are all zero;
    ``scale``: the weights' standard deviation)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(11)
    w1, w2 = ((rng.standard_normal(shape) * scale).astype(dtype) for shape in ((6, 8), (8, 4)))
    kind = onnx.TensorProto.FLOAT16 if dtype == np.float16 else onnx.TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["logits" if not zero_branch else "l"])]
    weights = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    if zero_branch:
        nodes += [helper.make_node("MatMul", ["input", "wz"], ["z"]), helper.make_node("Add", ["l", "z"], ["logits"])]
        weights.append(numpy_helper.from_array(np.zeros((6, 4), dtype), "wz"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", kind, ["N", 6])],
                              [helper.make_tensor_value_info("logits", kind, ["N", 4])], weights)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((200, 6)).astype(dtype)
    y = (x.astype(np.float32) @ w1.astype(np.float32) @ w2.astype(np.float32)).argmax(1)
    np.savez(path.with_suffix(".npz"), x=x, y=y)
    return path


@pytest.mark.parametrize("args", [
    ["--noise", "converters", "--mode", "global"],  # the second layer's DAC reads the first's ADC
    ["--noise", "pcm", "--read-noise", "per-sample", "--adc-bits", "8", "--levels", "1d"],  # ADC on a graph output, then reads
])  # fmt: skip
def test_analog_layers_in_a_chain_and_at_the_output(tmp_path, args):
    model = _chain(tmp_path / "chain.onnx")
    ran = wn("scan", model, "--data", model.with_suffix(".npz"), "--on", "weights", "--repeats", "2", *args,
             "--out", tmp_path / "r.json", "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(p["status"] != "failed" for p in report["points"])


def test_analog_corner_cases_are_answered(tmp_path):
    """An all-zero layer with per-sample reads scans (it reads nothing); converters and per-sample
    read noise on fp16 layers are one line each, walked or global (in float16 the read variances
    of weights near 1e-3, 1e-10 to 1e-8 at a day, would flush to zero)."""
    zero = _chain(tmp_path / "zero.onnx", zero_branch=True)
    ran = wn("scan", zero, "--data", zero.with_suffix(".npz"), "--on", "weights", "--noise", "pcm",
             "--read-noise", "per-sample", "--levels", "1d", "--repeats", "2", "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    half = _chain(tmp_path / "half.onnx", dtype=np.float16)
    ran = wn("scan", half, "--data", half.with_suffix(".npz"), "--on", "weights", "--noise", "mul", "--adc-bits", "8", "--quiet")
    assert ran.returncode == 2 and "converters take float32 values" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    for mode in ("walking", "global"):
        ran = wn("scan", half, "--data", half.with_suffix(".npz"), "--on", "weights", "--noise", "pcm", "--read-noise",
                 "per-sample", "--levels", "1d", "--mode", mode, "--quiet")  # fmt: skip
        assert ran.returncode == 2 and "per-sample read noise takes float32 values" in ran.stderr, ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "options"), [
    (["--noise", "add", "--levels", "1e-3,3e7"], {}),
    (["--noise", "mul", "--levels", "1e-3,1e5,3e7"], {}),
    (["--noise", "mixed", "--order", "mul-first", "--sigma-ratio", "0.5", "--levels", "1e-3,2e5"],
     {"order": "mul-first", "ratio": 0.5}),
    (["--noise", "pcm", "--levels", "1s,10y"], {}),
    (["--noise", "bitflip", "--format", "fp16", "--levels", "1e-3,1e-1"], {"format": "fp16"}),
])  # fmt: skip
def test_weight_noise_on_fp16_layers_overflows_only_where_float16_must(tmp_path, args, options):
    """A float16 chain (weights of standard deviation 0.001) walked at a small and a large level:
    every (layer, level, repeat)'s non-finite count and accuracy equal the fp16 file run with the
    weight perturbed in float32 (the model's formula on a float32 copy, the same draws) then cast
    to float16 — the noise's own arithmetic overflows nowhere (σ = 1e5 is inf in float16) — while
    overflow that float16 weights and outputs cannot avoid remains counted."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from wn_onnx.engine.draws import WEIGHT_STREAM
    from wn_onnx.graph_passes.weights import find_weight_points
    from wn_onnx.io.model import load_model
    from wn_onnx.noise import make_noise

    path, seed = _chain(tmp_path / "half.onnx", dtype=np.float16, scale=1e-3), 3
    data = np.load(path.with_suffix(".npz"))
    x, y = data["x"], data["y"]
    out = tmp_path / "r.json"
    ran = wn("scan", path, "--data", path.with_suffix(".npz"), "--on", "weights", *args, "--repeats", "2",
             "--seed", seed, "--mode", "walking", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0 and "Warning" not in ran.stderr, ran.stderr
    report = json.loads(out.read_text())
    model = make_noise(args[1], **options)
    proto = onnx.load(str(path))
    initial = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}

    def run(tensor: str, w: np.ndarray) -> tuple[int, float]:
        """(non-finite samples, accuracy) of the fp16 file with weight ``tensor`` replaced by ``w``."""
        edited = onnx.load_from_string(proto.SerializeToString())
        next(i for i in edited.graph.initializer if i.name == tensor).CopyFrom(numpy_helper.from_array(w, tensor))
        logits = ort.InferenceSession(edited.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        finite = np.isfinite(logits).all(axis=1)
        return int(np.sum(~finite)), float(np.mean(finite & (logits.argmax(1) == y)))

    for point, curve in zip(find_weight_points(load_model(path).model), report["points"], strict=True):
        w = initial[point.tensor].astype(np.float32)
        ref, top = Reference.of_weight(w, point.channel_axis), max(curve["sigmas"])
        for s, accuracy, nonfinite in zip(curve["sigmas"], curve["accuracy"], curve["nonfinite"], strict=True):
            for r in range(2):
                draws = model.draw(np.random.default_rng([seed, WEIGHT_STREAM, point.index, r]), w.shape, top)
                with np.errstate(over="ignore", invalid="ignore"):
                    half = model.perturb(w, s, draws, ref).astype(np.float16)
                count, score = run(point.tensor, half)
                assert (nonfinite[r], accuracy[r]) == (count, pytest.approx(score, abs=1e-12)), (point.tensor, s, r)

def test_overlapping_bit_floors_take_the_strictest():
    """On bits a floor is the most bits a layer may need: of two patterns matching one point, the
    smaller limit rules (μ = 6 bits fails max 4 even when max 8 also matches)."""
    from wn_onnx.gate import Policy, evaluate_policy

    mu = 2.0**-6
    curve = {"index": 0, "tensor": "conv1", "op_type": "Conv", "mu": mu, "mu_err": 0.0, "status": "ok", "sigmas": [mu],
             "accuracy": [[0.5]], "a_max": 0.9, "a_min": 0.1, "fit": {}}  # fmt: skip
    report = {"points": [curve], "global": None, "axis": {"name": "bits", "unit": "bits", "more": "down"}}
    verdicts = evaluate_policy(report, Policy(point_floors=[("re:conv.*", 4.0), ("re:.*", 8.0)]), None)
    assert [v.passed for v in verdicts] == [False] and "max μ 4 bits" in verdicts[0].threshold


def test_check_reads_a_time_floor_in_units(pcm_report):
    """check --min-mu 1d on a pcm scan: every layer keeps half its accuracy for at least a day
    (the first for about four months); --min-mu 1y fails on that first layer."""
    model, data = pcm_report[:2]
    common = ["check", model, "--data", data, "--noise", "pcm", "--on", "weights", "--drift-compensation", "none",
              "--levels", "log:1s:10y:7", "--repeats", "4", "--mode", "walking"]  # fmt: skip
    assert wn(*common, "--min-mu", "1d").returncode == 0
    failed = wn(*common, "--min-mu", "1y")
    assert failed.returncode == 1 and "| point 0 (2.weight) | 115 ± 40 d | ok | min μ 1 y | ❌ FAIL |" in failed.stdout, failed.stdout
