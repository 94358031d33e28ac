"""A plug-in metric gets the model's output as onnxruntime returns it (issue 28, item 6): a
sequence-first head ([T, N, K], a CTC recogniser's layout, declared [1, seqlen]) is scanned end
to end with its samples on axis 1, and every number matches the plain whole-graph reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from reference import Reference

import wn_onnx
from wn_onnx.engine.draws import GLOBAL_STREAM, WALK_STREAM
from wn_onnx.noise import NoiseSpec

T, K, SAMPLES = 6, 5, 24
PLUGIN = '''
import numpy as np

T, K = 6, 5


def agree(clean, noisy, labels):
    """Label-free: the share of time steps whose argmax stays the clean one, per sample."""
    assert clean.ndim == 3 and clean.shape[0] == T and clean.shape[2] == K, clean.shape
    assert noisy.shape == clean.shape and labels is None, (noisy.shape, labels)
    return (noisy.argmax(-1) == clean.argmax(-1)).mean(axis=0)


def tagged(clean, noisy, labels, sample_axis=0):
    """With labels [N, T] (samples first, as the data holds them) and the samples' axis."""
    assert sample_axis == 1 and noisy.shape == (T, len(labels), K), (sample_axis, noisy.shape)
    return (noisy.argmax(-1) == labels.T).mean(axis=0)
'''


def sequence_first(path: Path) -> Path:
    """x [N, 4] → tanh(x·w1) → ·w2 → [N, T, K] → transpose → y [T, N, K], declared [1, seqlen]."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((4, 8)).astype(np.float32), "w2": rng.standard_normal((8, T * K)).astype(np.float32),
             "shape": np.array([-1, T, K], np.int64)}  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Tanh", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["z"]), helper.make_node("Reshape", ["z", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "ocr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def plugin_module(tmp_path: Path) -> dict:
    (tmp_path / "seq.py").write_text(PLUGIN)
    namespace: dict = {}
    exec(PLUGIN, namespace)  # the same functions, for the reference's own scores
    return namespace


@pytest.mark.parametrize("labelled", [False, True], ids=["label-free", "labels"])
def test_a_plugin_gets_a_sequence_first_output_as_the_model_returns_it(tmp_path, labelled):
    model, functions = sequence_first(tmp_path / "m.onnx"), plugin_module(tmp_path)
    x = np.random.default_rng(2).standard_normal((SAMPLES, 4)).astype(np.float32)
    reference = Reference(model)
    (clean,) = reference.values(["y"], x, np.arange(SAMPLES))
    assert clean.shape == (T, SAMPLES, K)  # the layout the plug-in must see
    y = None
    if labelled:  # the clean prediction, every third sample's first step wrong: clean score 1 - 1/18
        y = clean.argmax(-1).T.copy()
        y[::3, 0] = (y[::3, 0] + 1) % K
    np.savez(tmp_path / "d.npz", **({"x": x} if y is None else {"x": x, "y": y}))
    name = "tagged" if labelled else "agree"
    sigmas, repeats, batch, seed = np.array([0.0, 0.3, 1.0, 3.0]), 2, 10, 4
    report = wn_onnx.scan(str(model), str(tmp_path / "d.npz"), metric=f"{tmp_path / 'seq.py'}:{name}",
                          label_free=not labelled, sigmas=",".join(map(str, sigmas)), repeats=repeats,
                          batch_size=batch, seed=seed, mode="both").to_json()  # fmt: skip
    assert report["clean_accuracy"] == pytest.approx(1 - 1 / 18 if labelled else 1.0)
    spec = NoiseSpec("add")

    def plugin(c: np.ndarray, n: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        return functions[name](c, n, labels, **({"sample_axis": 1} if labelled else {}))

    walked = [p for p in report["points"] if p["status"] != "failed"]
    assert {p["tensor"] for p in walked} >= {"x", "h", "a", "z"}, [p["tensor"] for p in report["points"]]
    for point in walked:
        ref = reference.counts([(point["index"], point["tensor"])], x, y, sigmas, spec, repeats, seed, WALK_STREAM,
                               batch, plugin=plugin)  # fmt: skip
        assert np.allclose(np.asarray(point["accuracy"]), ref / SAMPLES, atol=1.5 / SAMPLES), (point["tensor"], point["accuracy"], ref)
    tensors = [(p["index"], p["tensor"]) for p in report["points"] if p["index"] in report["global"]["points"]]
    ref = reference.counts(tensors, x, y, sigmas, spec, repeats, seed, GLOBAL_STREAM, batch, plugin=plugin)
    assert np.allclose(np.asarray(report["global"]["accuracy"]), ref / SAMPLES, atol=1.5 / SAMPLES)
    assert np.ptp(np.asarray(report["global"]["accuracy"])) > 0.2  # the noise moved the scores: a real check


def test_a_builtin_metric_refuses_a_sequence_first_output_naming_its_real_shape(tmp_path):
    """Built-in metrics score samples on axis 0: refused with the shape a run returns, pointed to a plug-in."""
    model = sequence_first(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((20, 4), np.float32))
    with pytest.raises(wn_onnx.WnError) as err:
        wn_onnx.scan(str(model), str(tmp_path / "d.npz"), metric="per-position", label_free=True, sigmas="0.1,1")
    text = str(err.value)
    assert f"output 'y' (declared 1×seqlen) has shape {T}×20×{K} for a run of 20 samples" in text, text
    assert "samples are on axis 1" in text and "plug-in" in text, text
