"""Hardware-aware training (``train --on weights``): the trainer perturbs each layer's weight with the
distribution the scan measures, gradients pass straight through, noise-trained networks are more
robust where it matters (PCM at one year, multiplicative weight noise), bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from conftest import resumed_like_straight, wn

import wn_onnx
from wn_onnx.graph_passes.weights import find_weight_points
from wn_onnx.io.embedded import digits_split
from wn_onnx.noise import Reference, make_noise
from wn_onnx.training.export import export_onnx, read_metadata
from wn_onnx.training.nets import build
from wn_onnx.training.trainer import TrainConfig, train
from wn_onnx.training.weight_noise import CHANNEL_AXIS, Linear, NoisyWeight, WeightNoise

YEAR = 365.25 * 86400


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 8, 8)), ("lenet5", (3, 32, 32)), ("cnn-s", (1, 49, 10))])
def test_weight_layer_i_is_weight_point_i_of_the_export(tmp_path, arch, shape):
    """``--at`` on weights names layers as ``points --on weights`` does, with the same output-channel
    axis (what the per-channel statistics of the noise models read)."""
    net = build(arch, shape, 10)
    points = find_weight_points(ir.load(export_onnx(net, shape, tmp_path / "m.onnx")))
    names = [f"{name}.weight" for name, m in net.named_children() if isinstance(m, NoisyWeight)]
    assert [p.tensor for p in points] == names and len(names) == len(net.weight_layers)
    assert {p.channel_axis for p in points} == {CHANNEL_AXIS}


LEVELS = np.array([1.0, 0.6, 0.3, 0.1, 0.0, -0.05, -0.4, -1.0]) * 0.2  # a row per level, repeated over 64 rows


@pytest.mark.parametrize(("name", "level"), [("add", "0.05"), ("mul", "0.3"), ("pcm", "1s"), ("pcm", "1h"), ("pcm", "1y")])
def test_training_draws_follow_the_scans_distribution(tmp_path, name, level):
    """The first layer of an MLP whose weight rows hold 8 levels: 400 draws of the trainer's noisy
    weight and 400 of the scan's (the exported weight point's statistics, the model's own draws)
    agree in mean and standard deviation per level within 5 standard errors over the draws (pcm
    with global drift compensation at 1 s, 1 h and 1 y)."""
    model = make_noise(name)
    strength = float(model.levels(level)[0])
    net = build("mlp", (1, 8, 8), 10)
    layer = net.weight_layers[0]
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.resize(LEVELS, 64)[:, None] * np.ones(64)))
    point = find_weight_points(ir.load(export_onnx(net, (1, 8, 8), tmp_path / "m.onnx")))[0]
    w = onnx.numpy_helper.to_array(next(i for i in onnx.load(tmp_path / "m.onnx").graph.initializer if i.name == point.tensor))
    assert np.array_equal(w, layer.weight.detach().numpy())
    ref, rng = Reference.of_weight(w, point.channel_axis), np.random.default_rng(1)
    trained, scanned = [], []
    for k in range(400):
        net.set_weight_noise(model, strength, [0], (7, k))
        trained.append(layer.used_weight().detach().numpy())
        scanned.append(model.perturb(w, strength, model.draw(rng, w.shape, strength), ref))
    rows = np.resize(np.arange(len(LEVELS)), 64)
    for g in range(len(LEVELS)):
        stats = []
        for draws in (np.array(trained)[:, rows == g], np.array(scanned)[:, rows == g]):
            per_draw = draws.reshape(len(draws), -1).astype(np.float64)
            stats.append([(s.mean(), s.std() / np.sqrt(s.size)) for s in (per_draw.mean(1), per_draw.std(1))])
        for (a, se_a), (b, se_b) in zip(*stats, strict=True):
            assert abs(a - b) <= 5 * np.hypot(se_a, se_b) + 1e-9, (name, level, LEVELS[g], a, b)


def test_gradients_pass_straight_through_and_draws_are_held_per_key():
    """The gradient reaching the clean weight is the one the noisy weight receives; the same key
    draws the same weight (an evaluation's chip), another key another; layers not chosen stay clean."""
    torch.manual_seed(0)
    layer, x = Linear(5, 3), torch.randn(16, 5)
    layer.weight_noise = WeightNoise(make_noise("pcm"), YEAR, (0, 1), (3, 5))
    noisy = layer.used_weight().detach().requires_grad_()
    assert not torch.equal(noisy, layer.weight)
    (layer(x) ** 2).sum().backward()
    (torch.nn.functional.linear(x, noisy, layer.bias) ** 2).sum().backward()
    assert torch.allclose(layer.weight.grad, noisy.grad, atol=1e-6)

    net = build("mlp", (1, 8, 8), 10).eval()
    x = torch.randn(16, 1, 8, 8)
    net.set_weight_noise(make_noise("mul"), 0.5, [1, 3], (0, 1))
    first = net(x)
    assert torch.equal(net(x), first)
    assert [torch.equal(m.used_weight(), m.weight) for m in net.weight_layers] == [True, False, True, False]
    net.set_weight_noise(make_noise("mul"), 0.5, [1, 3], (0, 2))
    assert not torch.equal(net(x), first)
    net.set_weight_noise(None, 0.0, None)
    assert all(m.weight_noise is None for m in net.weight_layers)


DIGITS = digits_split()


def accuracy_under(net: torch.nn.Module, path, noise, level: str, data) -> float:
    """Mean accuracy of the exported ``net`` over 20 programmed chips, every weight perturbed."""
    export_onnx(net, (1, 8, 8), path)
    report = wn_onnx.scan(str(path), data, noise=noise, on="weights", mode="global", sigmas=level, repeats=20, seed=3)
    return float(np.mean(report.to_json()["global"]["accuracy"]))


@pytest.mark.parametrize(("name", "options", "level", "epochs"), [
    ("pcm", {"compensation": "none"}, "1y", 10),
    ("pcm", {"prog_scale": 4.0}, "1y", 30),
    ("mul", {}, "0.5", 30),
])  # fmt: skip
def test_hardware_aware_training_is_more_accurate_under_that_noise(tmp_path, name, options, level, epochs):
    """Two seeded digits MLPs, one trained clean and one with the noise on every weight: scanned
    under that noise, the noise-trained one is more accurate. PCM at one year: without drift
    compensation (the drift shrinks every weight; the noise-trained network has learnt the drifted
    scale) and with global compensation at four times the programming noise (the published device
    at one year, compensated, costs a clean-trained digits MLP under 1 %: nothing to gain there)."""
    x_train, y_train, x_test, y_test = DIGITS
    data = tmp_path / "test.npz"
    np.savez(data, x=x_test, y=y_test)
    model = make_noise(name, **options)
    acc = {}
    for tag, noise in (("clean", None), ("noisy", model)):
        cfg = TrainConfig("mlp", "digits", epochs=epochs, augment=False, seed=0, noise=noise,
                          sigma=float(model.levels(level)[0]) if noise else 0.0, on="weights")  # fmt: skip
        net, _ = train(cfg, (x_train, y_train), (x_test, y_test), 10, (1, 8, 8))
        acc[tag] = accuracy_under(net, tmp_path / f"{tag}.onnx", model, level, data)
    assert acc["noisy"] > acc["clean"] + 0.01, acc


def test_resume_with_weight_noise_continues_identically(tmp_path):
    """The draws are keyed by seed, epoch and step: a run stopped after epoch 2 and resumed ends
    with the weights of the run that went straight through."""
    cfg = TrainConfig("mlp", "digits", epochs=3, augment=False, noise=make_noise("pcm"), sigma=YEAR, at=[1, 2], seed=7,
                      on="weights")  # fmt: skip
    history = resumed_like_straight(cfg, DIGITS, (1, 8, 8), tmp_path)
    assert len(history.epochs) == 3 and "val_accuracy_noisy" in history.epochs[-1]


def test_train_cli_on_weights_with_pcm(tmp_path):
    out = tmp_path / "m.onnx"
    ran = wn("train", "--epochs", "2", "--noise", "pcm", "--on", "weights", "--sigma", "1y", "--at", "0,3",
             "--prog-scale", "2", "--out", out, "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    meta = read_metadata(onnx.load(str(out)))
    assert meta["training_noise"] == {**make_noise("pcm", prog_scale=2.0).to_json(), "on": "weights", "sigma": YEAR,
                                      "at": [0, 3]}  # fmt: skip
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert history["config"]["on"] == "weights" and history["config"]["sigma"] == YEAR
    assert 0 < history["epochs"][-1]["val_accuracy_noisy"] <= 1
    assert "under the training noise" in ran.stdout


PLUGIN = """
import numpy as np
from wn_onnx.noise import NoiseModel, Axis

class OnActivations(NoiseModel):
    name = "act-only"
    axis = Axis("level")
    targets = ("activations",)

    def draw(self, rng, shape, top):
        return [rng.standard_normal(shape)]

    def perturb(self, x, strength, draws, ref):
        return x + strength * draws[0]
"""


@pytest.mark.parametrize(("args", "message"), [
    (["--noise", "pcm", "--sigma", "1y"], "noise model 'pcm' acts on weights, not on activations"),
    (["--noise", "quant", "--sigma", "4"], "training with noise model 'quant' on activations is not supported"),
    (["--noise", "PLUGIN", "--on", "weights", "--sigma", "1"], "acts on activations, not on weights"),
    (["--noise", "pcm", "--on", "weights", "--sigma", "-1"], "--sigma must be a finite number >= 0"),
    (["--noise", "pcm", "--on", "weights", "--sigma", "nan"], "--sigma must be a finite number >= 0"),
    (["--noise", "mul", "--on", "weights", "--sigma", "inf"], "--sigma must be a finite number >= 0"),
    (["--noise", "pcm", "--on", "weights", "--sigma", "0"], "--sigma 0: time must lie in (0"),
    (["--noise", "pcm", "--on", "weights"], "--noise needs --sigma > 0"),
    (["--noise", "pcm", "--on", "weights", "--sigma", "1h,1y"], "--sigma takes one level"),
    (["--noise", "pcm", "--on", "weights", "--sigma", "1y", "--g-max", "0"], "g-max must be a finite number > 0"),
    (["--noise", "mul", "--on", "weights", "--sigma", "0.3", "--at", "4"], "out of range (4 points"),
    (["--on", "weights", "--sigma", "0.3"], "--sigma without --noise"),
])  # fmt: skip
def test_bad_weight_training_input_is_one_line(tmp_path, args, message):
    plugin = tmp_path / "plug.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "m.onnx"
    args = [f"{plugin}:OnActivations" if a == "PLUGIN" else a for a in args]
    ran = wn("train", "--epochs", "1", *args, "--out", out, "--quiet")
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not out.exists()
