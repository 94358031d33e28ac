"""Figures, the HTML report, and the analyses (self-binarisation, mixed maps, weights)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from conftest import config_of, wn
from matplotlib import image as mpimg
from matplotlib.container import BarContainer, ErrorbarContainer
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.analysis import binarize, find_levels, histogram, mixed_grid, weight_magnitudes, weight_ratio
from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import load_npz, make_dataset
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL, digits_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.results.figures import align, binarize_figure, build_report, curves_figure, mu_figure, preserved_figure
from wn_onnx.scanner import run_scan
from wn_onnx.training.export import export_onnx
from wn_onnx.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def reports():
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    add = run_scan(loaded, data, config_of(SweepSettings(parse_grid("log:1e-2:1e3:16"), NoiseSpec("add"), 2)))
    mul = run_scan(loaded, data, config_of(SweepSettings(parse_grid("log:1e-2:1e10:25"), NoiseSpec("mul"), 2)))
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
    for part in ("<h2>summary</h2>", "clean accuracy", "global μ", "<h3>statuses</h3>", "threshold crossing"):
        assert part in page, part
    assert f"{add['clean_accuracy']:.2%}" in page and f"{add['global']['mu']:.3g}" in page


HOSTILE = "<img src=x onerror=alert(1)>"


def test_html_escapes_every_string_from_a_model(tmp_path, reports):
    add, _ = reports
    evil = json.loads(json.dumps(add))
    evil["model"] = f"/m/{HOSTILE}.onnx"
    evil["data"]["source"] = HOSTILE
    evil["points"][1]["tensor"] = HOSTILE
    evil["points"][2]["op_type"] = HOSTILE
    evil["points"][3]["tensor"] = "$x^2$ [/]r"  # mathtext and Rich markup are literal text too
    build_report([evil], [HOSTILE], tmp_path / "r.html", None)
    page = (tmp_path / "r.html").read_text()
    assert HOSTILE not in page and "onerror=alert(1)>" not in page
    assert page.count(html.escape(HOSTILE)) >= 5  # label, model, data, tensor, op: all shown as text
    assert re.findall(r"<img [^>]*>", page) == re.findall(
        r"<img alt='[^'<>]*' src='data:image/png;base64,[^']+'>", page
    )
    table = page[page.index("μ per point</h2>") :]
    assert "0.929" in table or f"{evil['points'][0]['mu']:.3g}" in table


def gids(ax) -> set[str]:
    """The ids of everything drawn on ``ax`` (report.py tags each element it draws)."""
    found, stack = set(), list(ax.get_children())
    while stack:
        artist = stack.pop()
        if artist.get_gid():
            found.add(artist.get_gid())
        stack += artist.get_children()
    return found


def no_bn_variant(report: dict) -> dict:
    """The same network without its BatchNorm points, tensors named otherwise (another export)."""
    other = json.loads(json.dumps(report))
    other["model"] = "no_bn.onnx"
    other["points"] = [p for p in other["points"] if p["op_type"] != "BatchNormalization"]
    for i, p in enumerate(other["points"]):
        p["index"], p["tensor"] = i, f"layer_{i}_{p['op_type'].lower()}"
    return other


def test_curve_panels_have_labels_reference_lines_and_marks(reports):
    _, mul = reports
    broken = json.loads(json.dumps(mul))
    broken["points"][3]["nonfinite"][5] = [4, 0]  # σ = 10^0.5, 10^1: inside the drop
    broken["points"][3]["accuracy"][6] = [float("nan"), float("nan")]
    fig = curves_figure(broken)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(axes) == len(mul["points"]) + 1
    first = axes[0]
    assert first.get_xlabel() == "σ" and first.get_ylabel() == "accuracy"
    assert first.get_title().startswith("0 input") and "μ = " in first.get_title()
    assert axes[-1].get_title().startswith("global (")
    assert "mul noise" in fig._suptitle.get_text()
    for ax in axes:
        assert {"measured", "clean-line", "clean-point", "axis-break", "chance-line"} <= gids(ax), ax.get_title()
        lo, hi = ax.get_xlim()
        assert hi < 1e7  # the sweep ran to 1e10, the curves stop moving long before
        for patch in ax.patches:  # the μ band stays inside the panel
            if patch.get_gid() == "mu-band":
                assert lo <= patch.get_x() and patch.get_x() + patch.get_width() <= hi
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "0"  # σ = 0: the clean model, left of the axis break
        clean = next(line for line in ax.lines if line.get_gid() == "clean-point")
        assert clean.get_ydata()[0] == pytest.approx(mul["clean_accuracy"]) and clean.get_xdata()[0] > lo
    assert "nonfinite" in gids(axes[3]) and "nonfinite" not in gids(axes[2])
    assert "mu-line" in gids(axes[0])
    # the fitted curve is drawn where the fit is `ok` and only there (2 σ per decade brackets some)
    statuses = [p["status"] for p in [*mul["points"], mul["global"]]]
    assert "ok" in statuses and "bracketed" in statuses
    assert all(("fit" in gids(ax)) == (status == "ok") for ax, status in zip(axes, statuses, strict=True))
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"clean accuracy", "logistic fit", "NaN/Inf outputs"}


def test_mu_figure_names_layers_keeps_bars_positive_and_bounds_tiny_mu(reports):
    add, _ = reports
    odd = json.loads(json.dumps(add))
    odd["points"][2].update(mu=1e-15, mu_err=1e-14, status="no-drop-from-start")
    odd["points"][1]["mu_err"] = 50 * odd["points"][1]["mu"]
    fig = mu_figure([odd])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "noise point (index, tensor)" and ax.get_ylabel().startswith("μ")
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert (
        ticks[0] == "0 input"
        and ticks[1] == "1 /2/Gemm_output_0"
        and ticks[2].startswith("2 /4/Ba")
        and "…" in ticks[2]
    )
    lowest = min(add["points"][0]["sigmas"])
    bottom, top = ax.get_ylim()
    assert bottom >= lowest / 2 and top < 1e3  # 1e-15 does not stretch the axis
    assert "below-grid" in gids(ax) and "global-mu" in gids(ax)
    for coll in ax.collections:  # error bars: every segment above zero on the log axis
        for seg in coll.get_segments():
            assert seg[:, 1].min() > 0
    assert any("below the grid" in t.get_text() for t in fig.texts)


def test_overlay_aligns_by_layer_role(reports):
    add, _ = reports
    other = no_bn_variant(add)
    columns, notes = align([add, other])
    assert notes and "layer role" in notes[0]
    assert len(columns) == len(add["points"])  # the BN points have no partner, everything else does
    paired = [(a["op_type"], b["op_type"]) for a, b in columns if a is not None and b is not None]
    assert len(paired) == len(other["points"]) and all(x == y for x, y in paired)
    assert [b for a, b in columns if a["op_type"] == "BatchNormalization"] == [None] * 3
    fig = mu_figure([add, other], ["bn", "no-bn"])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[1] == "1/1 Gemm" and ticks[3] == "3/2 Relu" and ticks[2].startswith("2 /4/Ba")
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} >= {"bn", "no-bn"}


def test_preserved_figure_has_error_bars_and_reference(reports):
    add, mul = reports
    fig = preserved_figure([add, mul], ["add", "mul"])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "accuracy preserved" and ax.get_xlabel() == "noise point (index, tensor)"
    assert "largest σ" in ax.get_title()
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and len(errs) == 2 and len(bars[0]) == len(add["points"])
    assert "clean-line" in gids(ax)
    assert any("σ = 1e+10" in t.get_text() for t in ax.get_legend().get_texts())


def test_binarize_figure_separates_clean_and_draws_levels():
    rng = np.random.default_rng(0)
    clean, noisy = np.maximum(rng.normal(0, 1, 5000), 0), np.maximum(rng.normal(0, 1e4, 5000), 0)
    h = {"index": 3, "op_type": "Relu", "clean": histogram(clean), "noisy": histogram(noisy)}
    result = {
        "point": {"index": 1}, "quantized_point": {"index": 3}, "noise": {"kind": "mul", "sigma": 1e4},
        "levels": {"count": 2, "values": [0.0, 0.0, 8000.0], "cuts": [0.0, 4000.0]},
        "accuracy": {"clean": 0.9, "noisy": 0.5, "quantized": 0.5, "clean_quantized": 0.2},
        "histograms": {"/6/Relu_output_0": h},
    }  # fmt: skip
    fig = binarize_figure(result)
    clean_ax, noisy_ax, log_ax = fig.axes
    assert clean_ax.get_title().endswith("clean") and noisy_ax.get_title().endswith("noisy")
    assert clean_ax.get_xlim()[1] < 10 < 1e4 < noisy_ax.get_xlim()[1]  # each histogram on its own range
    assert {"level", "cut"} <= gids(noisy_ax) and "level" not in gids(clean_ax)
    levels = sorted(line.get_xdata()[0] for line in noisy_ax.lines if line.get_gid() == "level")
    cuts = [line.get_xdata()[0] for line in noisy_ax.lines if line.get_gid() == "cut"]
    assert levels == [0.0, 8000.0] and cuts == [4000.0]
    assert log_ax.get_xscale() == "log" and log_ax.get_yscale() == "log"
    assert {"zeros-clean", "zeros-noisy", "log-clean", "log-noisy", "axis-break"} <= gids(log_ax)
    zeros = next(c for c in log_ax.collections if c.get_gid() == "zeros-clean")
    assert zeros.get_segments()[0][:, 1].max() == h["clean"]["zeros"]
    assert all(ax.get_ylabel() == "count" for ax in fig.axes) and log_ax.get_xticklabels()[0].get_text() == "0"


def test_overlaying_other_models_warns_and_aligns(tmp_path, reports):
    add, _ = reports
    other = json.loads(json.dumps(add))
    other["points"] = other["points"][2:]
    _, notes = build_report([add, other], ["a", "b"], tmp_path / "r.html", None)
    assert notes and "aligned by layer role" in notes[0]


def test_report_cli(tmp_path, reports):
    add, _ = reports
    (tmp_path / "a.json").write_text(json.dumps(add))
    res = wn("report", tmp_path / "a.json", "--html", tmp_path / "a.html", "--png", tmp_path / "f")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.html").stat().st_size > 10000 and (tmp_path / "f" / "mu_per_point.svg").is_file()
    (tmp_path / "bad.json").write_text("[1, 2")
    res = wn("report", tmp_path / "bad.json", "--html", tmp_path / "b.html")
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
    points = {p.index: p.tensor for p in find_points(load_model(DEFAULT_MODEL).model)}
    assert [r["point"] for r in a] == [1, 4, 7, 10]  # named as `wn-onnx points` names them
    assert [r["tensor"] for r in a] == [points[i] for i in (1, 4, 7, 10)]
    assert [r["ratio"] for r in weight_ratio(a, a)] == [1.0] * 4
    res = wn("analyze", "weights", DEFAULT_MODEL, "--json")
    assert res.returncode == 0 and len(json.loads(res.stdout)["layers"]) == 4
    res = wn("analyze", "weights", DEFAULT_MODEL, DEFAULT_MODEL)  # fmt: skip
    rows = [line.split() for line in res.stdout.splitlines() if line.strip()[:2].strip().isdigit()]
    assert [(r[0], r[1]) for r in rows] == [(str(i), points[i]) for i in (1, 4, 7, 10)], res.stdout


def test_analyze_bad_point(tmp_path):
    res = wn("analyze", "binarize", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--at", "42")  # fmt: skip
    assert res.returncode == 2 and "out of range" in res.stderr


def test_analyze_takes_a_dataset_with_the_models_normalisation(tmp_path):
    """--dataset digits (normalised from the model's metadata) gives what the matching npz gives."""
    base = ["analyze"]
    results = {}
    for name, source in (("npz", ["--data", DEFAULT_DATA]), ("dataset", ["--dataset", "digits", "--split", "test"])):
        res = wn(*base, "binarize", DEFAULT_MODEL, "--at", "1", "--limit", "80", "--threads", "1", *source,
                              "--out", tmp_path / f"{name}.json")  # fmt: skip
        assert res.returncode == 0, res.stderr
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())["accuracy"]
    assert results["npz"] == results["dataset"] and results["npz"]["clean"] > 0.9
    res = wn(*base, "mixed", DEFAULT_MODEL, "--at", "1", "--dataset", "digits", "--limit", "60", "--order", "mul-first",
                          "--sigma-mul-grid", "0.1,10", "--sigma-add-grid", "0.1,10", "--repeats", "1", "--out", tmp_path / "m.json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    grid = json.loads((tmp_path / "m.json").read_text())["grids"][0]["accuracy"]
    assert grid[0][0] > 0.9 > grid[1][1]


def test_linear_grid_without_zero_still_shows_the_clean_model(reports):
    add, _ = reports
    lin = json.loads(json.dumps(add))
    for c in [*lin["points"], lin["global"]]:
        c["sigmas"] = np.linspace(0.25, 4, len(c["sigmas"])).tolist()
    ax = curves_figure(lin).axes[0]
    assert ax.get_xscale() == "linear" and "axis-break" not in gids(ax)
    clean = next(line for line in ax.lines if line.get_gid() == "clean-point")
    assert clean.get_xdata()[0] == 0 and ax.get_xlim()[0] < 0


def test_global_only_report_overlays_with_a_walking_one(tmp_path, reports):
    add, _ = reports
    only_global = {**json.loads(json.dumps(add)), "points": []}
    written, notes = build_report([only_global, add], ["g", "w"], tmp_path / "r.html", None)
    assert written == [tmp_path / "r.html"] and notes
    fig = curves_figure(only_global)
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("global")


def test_analyze_onnxruntime_failure_under_noise_is_one_line(tmp_path):
    """Was: analyze ran its noisy graph with a raw session.run, so a model that fails only under
    noise (here: noise pushes a Gather index out of its table) ended as an internal error, exit 3."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.eye(3, dtype=np.float32), "table")
    w = numpy_helper.from_array(np.ones((4, 1), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),  # point 1: the noisy one
        helper.make_node("Relu", ["h"], ["r"]),  # point 2: levels
        helper.make_node("Cast", ["r"], ["i"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["i", "axis"], ["idx"]),
        helper.make_node("Gather", ["table", "idx"], ["logits"], axis=0),
    ]
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [table, w, axis])  # fmt: skip
    path = tmp_path / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.full((20, 4), 0.25, np.float32)  # index 1 clean
    np.savez(tmp_path / "d.npz", x=x, y=np.ones(20, np.int64))
    res = wn("analyze", "binarize", path, "--data", tmp_path / "d.npz", "--at", "1", "--noise", "add", "--sigma", "1e4",
             "--granularity", "op")  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "onnxruntime failed" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --- the report model (wn_onnx.Report): typed fields, exact round trip, a typed table, figures take it


def test_every_key_a_scan_writes_is_a_typed_attribute(reports):
    from wn_onnx.results.report import Report

    add, _ = reports
    r = Report.from_json(add)
    views = [r, *r.points, r.global_, *(c.fit for c in r.curves)]
    assert [v.extra for v in views] == [{}] * len(views)  # nothing rides in extra: every key is documented and typed
    assert (r.chance, r.repeats, r.num_classes, r.metric, r.seed) == (0.1, 2, 10, "top1", 0)
    assert (r.estimator, r.granularity, r.sigma_scale, r.on) == ("grid", "layer", "absolute", "activations")
    assert r.mode == "both" and r.repeats == len(r.points[0].accuracy[0])
    assert r.clean_nonfinite == 0 and r.partial is False and r.deterministic is False and r.seconds is None
    assert r.config_hash == add["config_hash"] and len(r.config_hash) == 64
    assert r.data["samples"] == add["data"]["samples"] > 0
    assert [p.node for p in r.points[:3]] == ["", "/2/Gemm", add["points"][2]["node"]] and r.points[2].node
    assert r.points[0].nonfinite == add["points"][0]["nonfinite"] and r.global_.points == add["global"]["points"]
    assert r.to_json() == add and list(r.to_json()) == list(add)  # exact, in the writer's key order


def test_absent_optional_keys_stay_absent_and_read_as_their_default(reports):
    from wn_onnx.results.report import Report

    add, _ = reports
    old = json.loads(json.dumps(add))  # a report from before these keys were written
    for key in ("metric", "estimator", "chance", "repeats", "clean_nonfinite"):
        del old[key]
    del old["points"][1]["node"], old["points"][1]["nonfinite"], old["points"][1]["fit"]["chi2_red"]
    del old["global"]["points"]
    r = Report.from_json(old)
    assert r.to_json() == old and "metric" not in r.to_json() and "node" not in r.points[1].to_json()
    assert r.global_.points == [] and "points" not in r.global_.to_json()
    assert (r.metric, r.estimator, r.chance, r.repeats, r.points[1].node, r.points[1].fit.chi2_red) == (
        "top1", "grid", None, None, "", None)  # fmt: skip
    r.seconds, r.points[1].node = 1.5, "/2/Gemm"  # set on a read report: written, after the keys it held
    out = r.to_json()
    assert list(out)[-1] == "seconds" and out["seconds"] == 1.5 and out["points"][1]["node"] == "/2/Gemm"


def test_a_falling_axis_is_typed_and_tabled_in_its_levels():
    import wn_onnx

    r = wn_onnx.scan(noise="quant", sigmas="lin:2:8:7", mode="walking", at="1,3")
    assert r.deterministic and r.repeats == 1 and r.axis["more"] == "down" and r.global_ is None
    p = r.points[0]
    assert p.levels == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0] and p.sigmas == [2.0**-b for b in p.levels]
    assert p.mu_level == pytest.approx(-np.log2(p.mu)) and 2 <= p.fewest_bits <= 8 and p.extra == {}
    frame = r.to_pandas()
    assert list(frame[frame.point == 1].level) == p.levels and list(frame.repeat.unique()) == [0]
    wide = r.to_pandas(long=False)
    assert list(wide.point) == [1, 3] and wide.mu_level.tolist() == pytest.approx([q.mu_level for q in r.points])


def test_figures_take_report_objects(tmp_path, reports):
    from wn_onnx.results.figures import axis_name, mu_table_html, summary_html
    from wn_onnx.results.report import Report
    from wn_onnx.results.schema import as_report_dict

    add, mul = reports
    typed = [Report.from_json(add), Report.from_json(mul)]
    assert as_report_dict(typed[0]) == add and as_report_dict(add) is add
    with pytest.raises(WnError, match="not a wn-onnx scan report"):
        as_report_dict([add])
    ticks = [t.get_text() for t in mu_figure([typed[0], mul], ["add", "mul"]).axes[0].get_xticklabels()]
    assert ticks == [t.get_text() for t in mu_figure([add, mul], ["add", "mul"]).axes[0].get_xticklabels()]
    assert ticks[0] == "0 input"
    assert len(curves_figure(typed[1]).axes) == len(curves_figure(mul).axes) >= len(mul["points"]) + 1
    bars = [len(c) for c in preserved_figure(typed, ["add", "mul"]).axes[0].containers if isinstance(c, BarContainer)]
    assert bars == [len(add["points"])] * 2
    assert align(typed)[0] == align([add, mul])[0] and axis_name(typed[1]) == axis_name(mul) == "σ"
    assert summary_html(typed, ["a", "m"]) == summary_html([add, mul], ["a", "m"])
    assert mu_table_html(typed, ["a", "m"]) == mu_table_html([add, mul], ["a", "m"])
    written, _ = build_report(typed, ["add", "mul"], tmp_path / "r.html", None)
    page = (tmp_path / "r.html").read_text()
    assert written == [tmp_path / "r.html"] and page.count("data:image/png;base64,") == 4
    assert f"{add['global']['mu']:.3g}" in page


def test_adaptive_and_sequential_bookkeeping_is_typed():
    import wn_onnx

    adaptive = wn_onnx.scan(repeats=2, adaptive=True, mode="walking", at="1").points[0]
    assert isinstance(adaptive.adaptive, wn_onnx.Adaptive) and adaptive.adaptive.extra == {}
    assert adaptive.adaptive.evaluations == len(adaptive.sigmas) < adaptive.adaptive.grid == 49
    assert adaptive.adaptive.tolerance == 0.05 and adaptive.sequential is None
    seq = wn_onnx.scan(estimator="sequential", mode="walking", at="1")
    s = seq.points[0].sequential
    assert seq.estimator == "sequential" and isinstance(s, wn_onnx.Sequential) and s.extra == {}
    assert s.evaluations == sum(s.trials) < s.grid_evaluations
    assert s.fraction == pytest.approx(s.evaluations / s.grid_evaluations)
    assert len(s.trials) == len(s.correct) == len(seq.points[0].sigmas) and seq.points[0].adaptive is None
    frame = seq.to_pandas()
    assert list(frame.repeat.unique()) == [0] and list(frame.accuracy) == [row[0] for row in seq.points[0].accuracy]
