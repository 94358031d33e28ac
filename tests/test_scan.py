"""Whole scans through the Python API: adaptive σ, process parallelism, redraw vs CRN."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import config_of

from wn_onnx.engine import SweepSettings
from wn_onnx.errors import WnError
from wn_onnx.io.data import load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.scanner import run_scan


@pytest.fixture(scope="module")
def digits_scan():
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    st = SweepSettings(default_grid(NoiseSpec("add")), NoiseSpec("add"), repeats=4, seed=3, batch_size=512)
    full = run_scan(loaded, data, config_of(st, dict(mode="both")))
    return loaded, data, st, full


def test_adaptive_agrees_within_error_with_far_fewer_evaluations(digits_scan):
    loaded, data, st, full = digits_scan
    fast = run_scan(loaded, data, config_of(st, dict(mode="both", adaptive=True)))
    for ref, got in zip([*full["points"], full["global"]], [*fast["points"], fast["global"]], strict=True):
        assert got["adaptive"]["evaluations"] * 3 <= len(st.sigmas), got["adaptive"]
        assert ref["status"] == got["status"] == "ok"
        assert abs(ref["mu"] - got["mu"]) <= 2 * np.hypot(ref["mu_err"], got["mu_err"]), (ref["mu"], got["mu"])
        # the measured σ are grid values, and with common random numbers they carry the same accuracy
        for sigma, acc in zip(got["sigmas"], got["accuracy"], strict=True):
            assert acc == ref["accuracy"][ref["sigmas"].index(sigma)]


def test_jobs_give_the_same_report(digits_scan):
    loaded, data, st, full = digits_scan
    parallel = run_scan(loaded, data, config_of(st, dict(mode="walking", jobs=2, at="0-4")))
    assert parallel["points"] == full["points"][:5]


def test_redraw_is_another_sample_of_the_same_curve(digits_scan):
    loaded, data, st, full = digits_scan
    st_redraw = SweepSettings(st.sigmas, st.spec, st.repeats, st.seed, st.batch_size, redraw=True)
    other = run_scan(loaded, data, config_of(st_redraw, dict(mode="walking", at="1,5")))
    assert other["common_random_numbers"] is False
    for got in other["points"]:
        ref = full["points"][got["index"]]
        assert got["accuracy"] != ref["accuracy"]
        assert abs(ref["mu"] - got["mu"]) <= 3 * np.hypot(ref["mu_err"], got["mu_err"])


def test_cuda_provider_that_fails_to_start_is_an_error_not_a_silent_cpu_run(monkeypatch):
    """onnxruntime-gpu without working CUDA lists the provider, then falls back to the CPU with a
    warning; the scan must refuse instead of reporting a GPU run it did not make."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    st = SweepSettings(np.array([0.1, 1.0]), NoiseSpec("add"), repeats=1)
    with pytest.raises(WnError, match="could not start CUDAExecutionProvider"):
        run_scan(loaded, data, config_of(st, dict(mode="global", device="cuda")))


def fixed_batch_twin(path, batch: int, baked: bool):
    """The embedded model declaring a batch of ``batch``; ``baked``: also reshaping its input to
    that batch, as the dynamo exporter bakes the example's batch into Reshape targets."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(DEFAULT_MODEL)
    graph = proto.graph
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    if baked:
        name = graph.input[0].name
        for node in graph.node:
            node.input[:] = [f"{name}_baked" if i == name else i for i in node.input]
        graph.initializer.append(numpy_helper.from_array(np.array([batch, 1, 8, 8], np.int64), "baked_shape"))
        graph.node.insert(0, helper.make_node("Reshape", [name, "baked_shape"], [f"{name}_baked"]))
    onnx.save(proto, path)
    return load_model(path)


@pytest.mark.parametrize("baked", [True, False], ids=["baked", "declared-only"])
def test_fixed_batch_model_scans_like_its_dynamic_twin(tmp_path, digits_scan, baked):
    """An export without a dynamic batch axis (torch.onnx.export's default): a batch that is only
    declared is freed after a numerical check; a baked one runs in batches of exactly its size,
    the last padded, and the padding must not count anywhere. Both give the dynamic twin's report."""
    loaded, data, st, full = digits_scan
    fixed = fixed_batch_twin(tmp_path / "fixed.onnx", 40, baked)  # 359 test images: 9 batches, the last padded by 1
    assert loaded.fixed_batch is None
    assert (fixed.fixed_batch, fixed.freed_batch) == ((40, None) if baked else (None, 40))
    got = run_scan(fixed, data, config_of(st, dict(mode="both")))
    assert got["clean_accuracy"] == full["clean_accuracy"]
    for ref, curve in zip([*full["points"], full["global"]], [*got["points"], got["global"]], strict=True):
        diff = np.abs(np.subtract(ref["accuracy"], curve["accuracy"])) * len(data)
        assert diff.max() <= 1, (curve.get("index"), diff.max())  # same draws; a rounding flip at most
        assert curve["status"] == ref["status"]


def test_batch_stays_fixed_where_the_graph_mixes_samples(tmp_path):
    """Dynamic quantization scales by the batch-wide range: 80 samples at once differ from two
    runs of 40, so the declared batch must stay."""
    from onnxruntime.quantization import quantize_dynamic

    fixed_batch_twin(tmp_path / "fixed.onnx", 40, baked=False)
    quantize_dynamic(str(tmp_path / "fixed.onnx"), str(tmp_path / "quantized.onnx"))
    quantized = load_model(tmp_path / "quantized.onnx")
    assert (quantized.fixed_batch, quantized.freed_batch) == (40, None)
