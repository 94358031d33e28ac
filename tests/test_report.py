"""Figures, the HTML report, and the analyses (self-binarisation, mixed maps, weights)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from matplotlib import image as mpimg
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.analysis import binarize, find_levels, mixed_grid, weight_magnitudes, weight_ratio
from wn_onnx.data import load_npz, make_dataset
from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.modelio import load_model
from wn_onnx.models.embedded import DEFAULT_DATA, DEFAULT_MODEL, digits_split
from wn_onnx.models.export import export_onnx
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.report import build_report
from wn_onnx.scan import ScanRequest, run_scan
from wn_onnx.training import TrainConfig, train


@pytest.fixture(scope="module")
def reports():
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    add = run_scan(loaded, data, SweepSettings(parse_grid("log:1e-2:1e3:16"), NoiseSpec("add"), 2), ScanRequest())
    mul = run_scan(loaded, data, SweepSettings(parse_grid("log:1e-2:1e10:25"), NoiseSpec("mul"), 2), ScanRequest())
    return add, mul


def drawn_content(path) -> tuple[float, int]:
    """Share of non-white pixels and number of distinct colours of a PNG."""
    img = mpimg.imread(path)[..., :3]
    flat = (img.reshape(-1, 3) * 255).astype(np.uint8)
    return float(np.mean(flat.min(axis=1) < 245)), len(np.unique(flat, axis=0))


def test_figures_and_html_are_real(tmp_path, reports):
    add, mul = reports
    written, notes = build_report([add, mul], ["add", "mul"], tmp_path / "r.html", tmp_path / "figs")
    assert notes == []
    pngs = sorted(p for p in written if p.suffix == ".png")
    svgs = sorted(p for p in written if p.suffix == ".svg")
    assert (
        {p.stem for p in pngs}
        == {"mu_per_point", "preserved_accuracy", "curves_1", "curves_2"}
        == {p.stem for p in svgs}
    )
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ink, colours = drawn_content(png)
        assert ink > 0.03 and colours > 20, (png, ink, colours)
    for svg in svgs:
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 100
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"]https?:", page)  # works offline: nothing fetched
    assert ("μ table" in page and "not-reached" in page) or "ok" in page


def test_overlaying_other_models_warns_and_aligns(tmp_path, reports):
    add, _ = reports
    other = json.loads(json.dumps(add))
    other["points"] = other["points"][2:]
    _, notes = build_report([add, other], ["a", "b"], tmp_path / "r.html", None)
    assert notes and "aligned by tensor name" in notes[0]


def test_report_cli(tmp_path, reports):
    add, _ = reports
    (tmp_path / "a.json").write_text(json.dumps(add))
    res = subprocess.run([sys.executable, "-m", "wn_onnx", "report", tmp_path / "a.json", "--html", tmp_path / "a.html", "--png", tmp_path / "f"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.html").stat().st_size > 10000 and (tmp_path / "f" / "mu_per_point.svg").is_file()
    (tmp_path / "bad.json").write_text("[1, 2")
    res = subprocess.run(
        [sys.executable, "-m", "wn_onnx", "report", tmp_path / "bad.json", "--html", tmp_path / "b.html"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "not a JSON report" in res.stderr


def test_levels_from_histogram():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-50, 3, 4000), rng.normal(0, 0.5, 2000), rng.normal(80, 4, 4000)])
    lv = find_levels(v)
    assert lv.count == 3 and lv.low == pytest.approx(-50, abs=1) and lv.high == pytest.approx(80, abs=1)
    relu = np.maximum(v, 0)
    assert find_levels(relu).count == 2
    with pytest.raises(WnError, match="empty histogram"):
        find_levels(np.array([np.nan]))


def test_self_binarised_network_keeps_accuracy_on_levels(tmp_path):
    """Trained with strong multiplicative noise at point 1, the network works on two levels after
    it; the clean-trained network under the same noise, levels or not, has lost its accuracy."""
    x_train, y_train, x_test, y_test = digits_split()
    sigma = 1e4
    cfg = TrainConfig("mlp", "digits", epochs=30, augment=False, noise=NoiseSpec("mul"), sigma=sigma, at=[1])
    net, _ = train(cfg, (x_train, y_train), (x_test, y_test), 10, (1, 8, 8))
    data = make_dataset(x_test, y_test, "digits")
    noisy = binarize(
        Engine(load_model(export_onnx(net, (1, 8, 8), tmp_path / "n.onnx")), ["CPUExecutionProvider"]),
        data,
        1,
        NoiseSpec("mul"),
        sigma,
        quantize_at=3,
    )
    assert noisy["levels"]["count"] == 2 and noisy["accuracy"]["noisy"] > 0.3
    assert abs(noisy["accuracy"]["quantized"] - noisy["accuracy"]["noisy"]) <= 0.05, noisy["accuracy"]
    clean = binarize(
        Engine(load_model(DEFAULT_MODEL), ["CPUExecutionProvider"]), data, 1, NoiseSpec("mul"), sigma, quantize_at=3
    )
    assert clean["accuracy"]["quantized"] < clean["accuracy"]["clean"] - 0.5, clean["accuracy"]
    hist = clean["histograms"]
    assert len(hist) == 4 and all(h["noisy"]["size"] > 0 for h in hist.values())


def threshold_model(path):
    """logits = [0.5, x]: class 1 iff x > 0.5; inputs are 0 (class 0) or 1 (class 1)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array([[0.0, 1.0]], np.float32), "w"), numpy_helper.from_array(np.array([0.5, 0.0], np.float32), "b")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_mixed_grid_order_matters(tmp_path):
    """For x = 0, mul-first leaves σ_add·z' while add-first gives σ_add·z·(1 + σ_mul·z'): with a
    large σ_mul the additive part is amplified in add-first only, and accuracy falls further."""
    engine = Engine(load_model(threshold_model(tmp_path / "t.onnx")), ["CPUExecutionProvider"])
    x = np.repeat(np.array([[0.0], [1.0]], np.float32), 2000, axis=0)
    data = make_dataset(x, (x[:, 0] > 0.5).astype(np.int64), "constructed")
    sm, sa = np.array([0.01, 10.0]), np.array([0.01, 0.5])
    mf = np.array(mixed_grid(engine, data, 0, "mul-first", sm, sa)["accuracy"])
    af = np.array(mixed_grid(engine, data, 0, "add-first", sm, sa)["accuracy"])
    assert mf[0, 0] == af[0, 0] == 1.0  # tiny noise: both orders leave every prediction intact
    assert mf[1, 1] - af[1, 1] > 0.1, (mf, af)  # both large: add-first is hit harder
    # theory for that cell: mul-first ≈ (Φ(1) + Φ(0.05))/2 ≈ 0.68, add-first ≈ 0.53
    assert abs(mf[1, 1] - 0.68) < 0.04 and abs(af[1, 1] - 0.53) < 0.05, (mf, af)


def test_weights_and_ratio(tmp_path):
    a = weight_magnitudes(str(DEFAULT_MODEL))
    assert [r["op_type"] for r in a] == ["Gemm"] * 4 and all(r["mean_abs"] > 0 for r in a)
    assert [r["ratio"] for r in weight_ratio(a, a)] == [1.0] * 4
    res = subprocess.run(
        [sys.executable, "-m", "wn_onnx", "analyze", "weights", DEFAULT_MODEL, "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0 and len(json.loads(res.stdout)["layers"]) == 4


def test_analyze_bad_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "wn_onnx", "analyze", "binarize", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--at", "42"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "out of range" in res.stderr
