"""The trainer: sane accuracy, noise where asked, clamping, exact resume, faithful export."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch
from conftest import config_of, randomize_bn, resumed_like_straight, wn

from wn_onnx.analysis import weight_magnitudes
from wn_onnx.engine import SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.io.data import make_dataset
from wn_onnx.io.embedded import digits_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.scanner import run_scan
from wn_onnx.training.export import (
    EXPORT_RTOL,
    export_difference,
    export_onnx,
    max_export_error,
    read_metadata,
    verified_export,
)
from wn_onnx.training.nets import build
from wn_onnx.training.trainer import TrainConfig, train

DIGITS = digits_split()


def train_digits(epochs: int = 12, **kw) -> torch.nn.Module:
    x_train, y_train, x_test, y_test = DIGITS
    cfg = TrainConfig("mlp", "digits", epochs=epochs, augment=False, **kw)
    return train(cfg, (x_train, y_train), (x_test, y_test), 10, (1, 8, 8))


@pytest.mark.parametrize(
    ("arch", "shape", "bn_nodes"), [("mlp", (1, 28, 28), 3), ("lenet5", (3, 32, 32), 4), ("cnn-s", (1, 49, 10), 3)]
)
def test_export_keeps_bn_and_matches_torch(tmp_path, arch, shape, bn_nodes):
    torch.manual_seed(0)
    net = randomize_bn(build(arch, shape, 12, bn=True))
    path = export_onnx(net, shape, tmp_path / "m.onnx", {"arch": arch})
    proto = onnx.load(str(path))
    assert sum(n.op_type == "BatchNormalization" for n in proto.graph.node) == bn_nodes
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert read_metadata(proto)["arch"] == arch
    assert (
        max_export_error(net, path, np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)) <= 1e-5
    )


def test_digits_training_reaches_sane_accuracy():
    _net, history = train_digits()
    assert history.epochs[-1]["val_accuracy"] > 0.85
    assert [e["epoch"] for e in history.epochs] == list(range(1, 13))


def test_noise_is_injected_only_at_the_chosen_point():
    torch.manual_seed(0)
    net = build("mlp", (1, 8, 8), 10, bn=True).train()
    net.set_noise(NoiseSpec("add"), 0.5, [3])
    seen = []
    hooks = [p.register_forward_hook(lambda _m, i, o: seen.append(not torch.equal(i[0], o))) for p in net.points]
    x = torch.randn(8, 1, 8, 8, requires_grad=True)
    net(x).sum().backward()
    for h in hooks:
        h.remove()
    assert seen == [i == 3 for i in range(11)]
    assert x.grad is not None and torch.isfinite(x.grad).all()  # straight-through gradients


def test_noisy_training_at_a_point_raises_that_points_mu(tmp_path):
    """Additive noise at point 1 during training: μ at point 1 rises far more than elsewhere."""
    _x_train, _y_train, x_test, y_test = DIGITS
    clean, _ = train_digits(epochs=15)
    noisy, _ = train_digits(epochs=15, noise=NoiseSpec("add"), sigma=1.5, at=[1])
    data = make_dataset(x_test, y_test, "digits")
    st = SweepSettings(parse_grid("log:1e-2:1e3:26"), NoiseSpec("add"), repeats=3)
    mus = []
    for i, net in enumerate((clean, noisy)):
        path = export_onnx(net, (1, 8, 8), tmp_path / f"m{i}.onnx")
        report = run_scan(load_model(path), data, config_of(st, dict(mode="walking", at="1,4,10")))
        mus.append({p["index"]: p["mu"] for p in report["points"]})
    assert mus[1][1] > 2 * mus[0][1], mus
    assert mus[1][1] / mus[0][1] > 1.5 * max(mus[1][4] / mus[0][4], mus[1][10] / mus[0][10]), mus


def test_clamping_holds():
    net, _ = train_digits(epochs=3, clamp=0.05)
    weights = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert all(float(w.detach().abs().max()) <= 0.05 + 1e-7 for w in weights)
    assert any(float(w.detach().abs().max()) >= 0.05 - 1e-6 for w in weights)  # the bound was active


def test_resume_continues_identically(tmp_path):
    cfg = TrainConfig("mlp", "digits", epochs=3, augment=False, noise=NoiseSpec("mul"), sigma=0.3, at=None, seed=7)
    history = resumed_like_straight(cfg, DIGITS, (1, 8, 8), tmp_path)
    assert len(history.epochs) == 3



def test_train_cli_exports_metadata_and_scan_reads_it(tmp_path):
    out = tmp_path / "m.onnx"
    res = wn("train", "--epochs", "2", "--out", out, "--quiet", "--noise", "add", "--sigma", "0.3", "--at", "2")
    assert res.returncode == 0, res.stderr
    meta = read_metadata(onnx.load(str(out)))
    assert meta["arch"] == "mlp" and meta["dataset"] == "digits" and meta["bn"] is True
    assert meta["normalization"] == {"mean": [0.5], "std": [0.5]}
    assert meta["training_noise"] == {"kind": "add", "order": None, "on": "activations", "sigma": 0.3, "at": [2]}
    assert len(meta["weight_stats"]) == 4 and all(w["mean_abs"] > 0 for w in meta["weight_stats"])
    assert (
        [w["point"] for w in meta["weight_stats"]] == [r["point"] for r in weight_magnitudes(str(out))] == [1, 4, 7, 10]
    )
    assert json.loads(out.with_suffix(".history.json").read_text())["epochs"][-1]["epoch"] == 2
    scan = wn("scan", out, "--dataset", "digits", "--sigmas", "0.1,1,10", "--repeats", "1", "--quiet", "--json")
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["data"]["source"].startswith("digits test")


def test_train_cli_bad_input(tmp_path):
    good = tmp_path / "m.onnx"
    assert wn("train", "--epochs", "1", "--out", good, "--quiet").returncode == 0
    cases = [
        (["train", "--dataset", "imagenet"], "unknown dataset"),
        (["train", "--arch", "resnet"], "Invalid value for '--arch'"),
        (["train", "--dataset", "cifar10", "--data-dir", tmp_path], "no CIFAR-10 batches"),
        (["train", "--no-bn", "--out", good, "--resume"], "checkpoint of mlp (bn=True"),
        (["train", "--arch", "lenet5"], "lenet5 does not fit digits's inputs of shape [1, 8, 8]"),
        (["train", "--noise", "add"], "--sigma > 0"),
        (
            ["train", "--noise", "add", "--sigma", "1", "--at", "99", "--epochs", "1", "--out", tmp_path / "x.onnx"],
            "out of range (11 points",
        ),
    ]
    for args, message in cases:
        res = wn(*args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_embedded_default_is_what_build_makes(tmp_path):
    import onnxruntime as ort

    from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
    from wn_onnx.training.embedded import build

    model, data = build(tmp_path, epochs=10)
    with np.load(DEFAULT_DATA) as shipped, np.load(data) as rebuilt:
        assert np.array_equal(shipped["x"], rebuilt["x"]) and np.array_equal(shipped["y"], rebuilt["y"])
        x, y = shipped["x"], shipped["y"]
    for path, floor in ((DEFAULT_MODEL, 0.95), (model, 0.9)):
        logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert (logits.argmax(1) == y).mean() > floor


def test_export_check_is_relative_to_the_logits(tmp_path):
    """Logits ≈ 1e4·(usual): float32 differences beyond 1e-5 in absolute terms are no export fault."""
    torch.manual_seed(0)
    net = randomize_bn(build("mlp", (1, 8, 8), 10, bn=True))
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    x = np.random.default_rng(0).standard_normal((128, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        scale = float(net(torch.from_numpy(x)).abs().max())
    assert scale > 1e3
    relative = verified_export(net, (1, 8, 8), tmp_path / "big.onnx", {"arch": "mlp"}, x)
    error, _, same = export_difference(net, tmp_path / "big.onnx", x)
    assert same and relative <= EXPORT_RTOL and error == pytest.approx(relative * scale)
    assert error > 1e-5  # an absolute 1e-5 tolerance would have refused this faithful export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx"]


class ExportsSomethingElse(torch.nn.Module):
    """Computes y in torch but exports −y: an export that does not match."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return -y if torch.onnx.is_in_onnx_export() else y


def test_failed_export_check_leaves_no_file(tmp_path):
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    with pytest.raises(WnError, match="nothing written"):
        verified_export(ExportsSomethingElse(), (1, 8, 8), tmp_path / "m.onnx", None, x)
    assert list(tmp_path.iterdir()) == []


def test_train_cli_prints_clean_and_noisy_accuracy(tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    res = wn("train", "--epochs", "1", "--limit", "300", "--out", out, "--quiet", "--noise", "mul", "--sigma", "2")
    assert res.returncode == 0, res.stderr
    assert re.search(r"val accuracy clean \d+\.\d+% · under the training noise \d+\.\d+%", res.stdout), res.stdout
    meta = read_metadata(onnx.load(str(out)))
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert meta["val_accuracy_noisy"] == history["epochs"][-1]["val_accuracy_noisy"]
    assert f"{meta['val_accuracy_noisy']:.2%}" in res.stdout
