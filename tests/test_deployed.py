"""Deployed-model shapes (issue 16): several inputs, a fed state and sample rate, a sigmoid
output, per-pixel and per-position outputs. Walking and global scans against the plain
reference evaluator (tests/reference.py: noise by hand, whole graph run, scores computed there)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import config_of, wn
from deployed import build
from reference import Reference, scores

from wn_onnx.engine import SweepSettings
from wn_onnx.engine.draws import GLOBAL_STREAM, WALK_STREAM
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import Inputs, check_shape, load_npz, make_dataset
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.scanner import run_scan

SAMPLES, BATCH, REPEATS = 21, 8, 2
SIGMAS = np.array([0.0, 0.3, 3.0])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    return build(tmp_path_factory.mktemp("deployed"))


def reference_inputs(dep, arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, int | None]]:
    """The graph's inputs written out by hand: a fed state repeated over the batch on its axis."""
    out: dict[str, tuple[np.ndarray, int | None]] = {k: (v, 0) for k, v in arrays.items()}
    for name, value in dep.feeds.items():
        if name in dep.axes:
            reps = [1] * (value.ndim + 1)
            reps[dep.axes[name]] = SAMPLES
            out[name] = (np.tile(np.expand_dims(value, dep.axes[name]), reps), dep.axes[name])
        else:
            out[name] = (value.astype(np.int64), None)
    return out


def labelled(dep, reference: Reference, x) -> np.ndarray:
    """Labels that agree with the clean model on about 80 % of the samples (or positions)."""
    clean = reference.values([reference.proto.graph.output[0].name], x, np.arange(SAMPLES))[0]
    pred = (clean > 0.5).astype(np.int64) if dep.metric == "binary" else clean.argmax(axis=-1)
    rng = np.random.default_rng(1)
    flip = rng.random(pred.shape) < 0.2
    return np.where(flip, (pred + 1) % (2 if dep.metric == "binary" else clean.shape[-1]), pred)


CASES = [(name, False) for name in ("two_inputs", "stateful", "binary", "segmenter", "tagger")] + [
    ("stateful", True), ("binary", True), ("segmenter", True)
]  # fmt: skip


@pytest.mark.parametrize(("name", "label_free"), CASES)
def test_scan_equals_reference(deployed, name, label_free):
    dep = deployed[name]
    loaded = load_model(dep.path)
    arrays = dep.data(SAMPLES)
    reference = Reference(dep.path)
    x_ref = reference_inputs(dep, arrays)
    y = None if label_free else labelled(dep, reference, x_ref)
    data = check_shape(make_dataset(Inputs(arrays), y, name), loaded, dep.feeds)
    st = SweepSettings(SIGMAS, NoiseSpec("add"), repeats=REPEATS, batch_size=BATCH, metric=dep.metric)
    report = run_scan(loaded, data, config_of(st, dict(mode="both", label_free=label_free)))
    assert report["metric"] == dep.metric and report["data"]["samples"] == SAMPLES
    clean = reference.values([reference.proto.graph.output[0].name], x_ref, np.arange(SAMPLES))[0]
    assert report["clean_accuracy"] == pytest.approx(scores(dep.metric, clean, clean, y).mean())
    args = (x_ref, y, SIGMAS, st.spec, REPEATS, st.seed)
    points = find_points(loaded.model, "layer")
    assert [p["index"] for p in report["points"]] == [p.index for p in points]
    walked = points[:: max(1, len(points) // 4)]
    for point in walked:
        ref = reference.counts([(point.index, point.tensor)], *args, WALK_STREAM, BATCH, metric=dep.metric)
        fast = np.array(report["points"][point.index]["accuracy"]) * SAMPLES
        assert np.abs(fast - ref).max() <= 1e-6 + 1, (name, point, fast.tolist(), ref.tolist())
    ref = reference.counts([(p.index, p.tensor) for p in points], *args, GLOBAL_STREAM, BATCH, metric=dep.metric)
    fast = np.array(report["global"]["accuracy"]) * SAMPLES
    assert np.abs(fast - ref).max() <= 1e-6 + 1, (name, fast.tolist(), ref.tolist())
    assert fast[-1].max() < fast[0].min()  # the noise is there
    chance = 1 / report["num_classes"] if not label_free else None
    if chance is not None:
        assert report["chance"] == pytest.approx(chance)
    else:
        assert 0 < report["chance"] < 1


def test_per_sample_state_from_the_data(deployed, tmp_path):
    """The state given per sample in the npz (samples first) is moved to the input's batch axis:
    the same report as the state fed as a constant, when the arrays hold that constant."""
    dep = deployed["stateful"]
    loaded = load_model(dep.path)
    arrays = dep.data(SAMPLES)
    np.savez(tmp_path / "d.npz", x=arrays["x"], h0=np.zeros((SAMPLES, 1, 12), np.float32))
    st = SweepSettings(SIGMAS, NoiseSpec("add"), repeats=1, batch_size=BATCH)
    req = dict(mode="global", label_free=True)
    fed = run_scan(loaded, check_shape(make_dataset(Inputs(arrays), None, "a"), loaded, dep.feeds), config_of(st, req))
    data = load_npz(tmp_path / "d.npz", require_labels=False, names=("x", "h0"))
    own = run_scan(loaded, check_shape(data, loaded, {"sr": np.array(16000)}), config_of(st, req))
    assert own["global"]["accuracy"] == fed["global"]["accuracy"]


def test_outputs_that_fit_no_metric_are_refused(deployed):
    """Never flattened: a per-position output is not a classifier of H·W·K classes, a width-1
    probability not a class vector; the error names the shape."""
    st = SweepSettings(SIGMAS, NoiseSpec("add"), repeats=1, batch_size=BATCH)
    for name, text in [("tagger", "7×5"), ("segmenter", "6×6×3"), ("binary", "the binary metric")]:
        dep = deployed[name]
        loaded = load_model(dep.path)
        data = check_shape(make_dataset(Inputs(dep.data(SAMPLES)), None, name), loaded)
        with pytest.raises(WnError, match=text):
            run_scan(loaded, data, config_of(st, dict(mode="global", label_free=True)))
    with pytest.raises(WnError, match="per-position needs"):  # a class vector has no positions
        dep = deployed["two_inputs"]
        loaded = load_model(dep.path)
        data = check_shape(make_dataset(Inputs(dep.data(SAMPLES)), None, "two"), loaded)
        run_scan(loaded, data, config_of(SweepSettings(SIGMAS, NoiseSpec("add"), repeats=1, metric="per-position"), dict(mode="global", label_free=True)))  # fmt: skip


def test_missing_and_unknown_inputs_are_named(deployed):
    dep = deployed["stateful"]
    loaded = load_model(dep.path)
    data = make_dataset(Inputs(dep.data(SAMPLES)), None, "d")
    with pytest.raises(WnError, match=r"'h0'.*--feed h0=VALUE"):
        check_shape(data, loaded, {"sr": np.array(16000)})
    with pytest.raises(WnError, match="no input 'rate'"):
        check_shape(data, loaded, {**dep.feeds, "rate": np.array(1)})
    with pytest.raises(WnError, match="fractional"):
        check_shape(data, loaded, {**dep.feeds, "sr": np.array(16000.5)})
    bound = check_shape(data, loaded, dep.feeds)
    again = make_dataset(bound.x, np.zeros(SAMPLES, int), "labelled later")  # keeps what was fed, and where
    assert set(again.x.fixed) == {"sr"} and again.x.axes == bound.x.axes == {"x": 0, "h0": 1}


def test_plugin_metric_equals_builtin(deployed, tmp_path):
    """A plug-in (clean, noisy, labels) → per-sample scores: per-position accuracy written as a
    file gives the built-in's numbers; a plug-in's a_min is estimated from the data."""
    (tmp_path / "mymetric.py").write_text(
        "import numpy as np\n"
        "def positions(clean, noisy, labels):\n"
        "    target = clean.argmax(-1) if labels is None else labels\n"
        "    return (noisy.argmax(-1) == target).reshape(len(noisy), -1).mean(axis=1)\n"
    )
    dep = deployed["tagger"]
    loaded = load_model(dep.path)
    data = check_shape(make_dataset(Inputs(dep.data(SAMPLES)), None, "t"), loaded)
    req = dict(mode="global", label_free=True)
    reports = {
        metric: run_scan(loaded, data, config_of(SweepSettings(SIGMAS, NoiseSpec("add"), repeats=2, batch_size=BATCH, metric=metric), req))
        for metric in ("per-position", f"{tmp_path / 'mymetric.py'}:positions")
    }  # fmt: skip
    builtin, plugin = reports.values()
    np.testing.assert_allclose(plugin["global"]["accuracy"], builtin["global"]["accuracy"])
    assert plugin["chance"] == pytest.approx(builtin["chance"])


def test_cli_feeds_and_metrics(deployed, tmp_path):
    """--feed and --metric from the command line, scan and check; mistakes are one line, exit 2."""
    dep = deployed["stateful"]
    np.savez(tmp_path / "d.npz", **dep.data(SAMPLES))
    fast = ["--sigmas", "0.1,10", "--repeats", "1", "--label-free"]
    res = wn("scan", dep.path, "--data", tmp_path / "d.npz", "--feed", "h0=0", "--feed", "sr=16000", "--json",
             "--quiet", *fast)  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["metric"] == "top1" and report["data"]["samples"] == SAMPLES and report["points"][0]["tensor"] == "x"
    res = wn("check", dep.path, "--data", tmp_path / "d.npz", "--feed", "h0=0", "--feed", "sr=16000",
             "--metric", "top1", "--mode", "global", "--min-mu", "0", *fast)  # fmt: skip
    assert res.returncode in (0, 1) and "global" in res.stdout, res.stderr  # a verdict, pass or fail
    for args, text in [
        (["--feed", "h0=0"], "no array for the model's input 'sr'"),
        (["--feed", "h0=0", "--feed", "sr=16000", "--metric", "nope"], "unknown metric 'nope'"),
        (["--feed", "h0=0", "--feed", "sr=16000", "--metric", "no_such_module:f"], "cannot import no_such_module"),
    ]:
        res = wn("scan", dep.path, "--data", tmp_path / "d.npz", *args, *fast)
        assert res.returncode == 2 and text in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_python_api_takes_inputs_feeds_and_metric(deployed):
    """wn_onnx.scan with a dict of input arrays, feeds and a metric: the library path's numbers."""
    import wn_onnx

    dep = deployed["two_inputs"]
    arrays = dep.data(SAMPLES)
    report = wn_onnx.scan(dep.path, (arrays, None), label_free=True, mode="global", sigmas=list(SIGMAS), repeats=2,
                          batch_size=BATCH)  # fmt: skip
    loaded = load_model(dep.path)
    st = SweepSettings(SIGMAS, NoiseSpec("add"), repeats=2, batch_size=BATCH)
    direct = run_scan(loaded, check_shape(make_dataset(Inputs(arrays), None, "a"), loaded), config_of(st, dict(mode="global", label_free=True)))  # fmt: skip
    assert report.to_json()["global"]["accuracy"] == direct["global"]["accuracy"]
    dep = deployed["stateful"]
    fed = wn_onnx.scan(dep.path, (dep.data(SAMPLES), None), label_free=True, mode="global", repeats=1,
                       sigmas=list(SIGMAS), feeds={"h0": 0.0, "sr": 16000})  # fmt: skip
    assert fed.to_json()["global"]["accuracy"][-1][0] < 1
    dep = deployed["tagger"]
    tagged = wn_onnx.scan(dep.path, (dep.data(SAMPLES)["x"], None), label_free=True, mode="global", repeats=1,
                          sigmas=list(SIGMAS), metric="per-position")  # fmt: skip
    assert tagged.to_json()["metric"] == "per-position"
