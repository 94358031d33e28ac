"""The command line: the embedded default, JSON schema, reproducibility, bad input → exit 2."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import wn as run_cli
from onnx import TensorProto, helper

from wn_onnx.results.schema import schema_problems

FAST = ["--sigmas", "log:1e-2:1e3:11", "--repeats", "2", "--quiet"]



def wn(*args, **kw):
    """The command in-process at a 200-column terminal (long names stay on one line)."""
    return run_cli(*args, columns=200, **kw)


def test_embedded_default_scan_writes_schema(tmp_path):
    out = tmp_path / "r.json"
    res = wn("scan", *FAST, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "global" in res.stdout and "status" in res.stdout
    report = json.loads(out.read_text())
    assert schema_problems(report) == []
    assert isinstance(report["seed"], int) and isinstance(report["clean_accuracy"], float)
    assert report["num_classes"] == 10 and report["clean_accuracy"] > 0.95
    assert len(report["points"]) == 11
    for p in report["points"]:
        assert len(p["accuracy"]) == len(p["sigmas"]) == 11 and len(p["accuracy"][0]) == 2
    assert "index" not in report["global"]
    assert report["noise"] == {"kind": "add", "order": None}


def test_same_seed_same_json_whatever_the_threads(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    args = ["scan", "--noise", "mixed", "--order", "add-first", "--sigma-ratio", "0.1", *FAST, "--limit", "200"]
    assert wn(*args, "--out", a, "--threads", "1").returncode == 0
    assert wn(*args, "--out", b, "--threads", "2", "--batch-size", "64").returncode == 0
    assert wn(*args, "--out", c, "--seed", "1").returncode == 0
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ja == jb
    assert json.loads(c.read_text())["points"] != ja["points"]


def test_points_json(tmp_path):
    res = wn("points", Path(__file__).parents[1] / "wn_onnx/io/assets/digits_mlp_bn.onnx", "--json")
    assert res.returncode == 0, res.stderr
    pts = json.loads(res.stdout)["points"]
    assert [p["index"] for p in pts] == list(range(11))
    assert set(pts[0]) == {"index", "tensor", "op_type", "node", "shape"} and pts[0]["op_type"] == "Input"


def _int_output_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def bad_inputs(tmp_path, digits):
    model, x, y = digits
    files = {}
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    files["junk"] = tmp_path / "junk.onnx"
    blob = Path(model).read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(blob[: len(blob) // 3])
    files["truncated"] = tmp_path / "trunc.onnx"
    np.savez(tmp_path / "shape.npz", x=x.reshape(len(x), -1)[:, :50], y=y)
    np.savez(tmp_path / "labels.npz", x=x, y=y + 5)
    np.savez(tmp_path / "strings.npz", x=np.array(["a"] * len(y)), y=y)
    np.savez(tmp_path / "pickled.npz", x=np.array([{"evil": 1}] * 3, dtype=object), y=y[:3])
    np.savez(tmp_path / "nan.npz", x=np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y=y)
    np.savez(tmp_path / "count.npz", x=x, y=y[:-3])
    files["intout"] = _int_output_model(tmp_path / "intout.onnx")
    np.savez(tmp_path / "four.npz", x=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64))
    return model, tmp_path, files


def test_bad_input_one_line_exit_2(bad_inputs):
    model, d, f = bad_inputs
    cases = [
        (["scan", d / "missing.onnx", "--data", d / "labels.npz"], "model file not found"),
        (["scan", d, "--data", d / "labels.npz"], "not a file"),
        (["scan", f["junk"], "--data", d / "labels.npz"], "not a readable ONNX model"),
        (["scan", f["truncated"], "--data", d / "labels.npz"], "ONNX"),
        (["scan", model, "--data", d / "shape.npz"], "the model expects 1×8×8"),
        (["scan", model, "--data", d / "labels.npz"], "labels span [5, 14] but the model has 10 classes"),
        (["scan", model, "--data", d / "strings.npz"], "expected numbers"),
        (["scan", model, "--data", d / "pickled.npz"], "pickled Python objects"),
        (["scan", model, "--data", d / "nan.npz"], "contain NaN or Inf"),
        (["scan", model, "--data", d / "count.npz"], "inputs but"),
        (["scan", f["intout"], "--data", d / "four.npz"], "no float output"),
        (["scan", model, "--data", d / "labels.npz", "--at", "op:Conv"], "selects no noise point"),
        (["scan", model], "give --data"),
        (["scan", "--sigmas", "log:0:1:3"], "positive bounds"),
        (["scan", "--noise", "mixed"], "needs an order"),
        (["scan", "--noise", "mixed", "--order", "mul-first", "--sigma-ratio", "2"], "must lie in [0, 1]"),
        (["points", f["junk"]], "not a readable ONNX model"),
    ]
    for args, message in cases:
        res = wn(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_nan_outputs_are_counted_not_fatal(tmp_path, digits):
    """Huge multiplicative noise overflows float32: counted as wrong and reported."""
    out = tmp_path / "r.json"
    res = wn(
        "scan",
        "--noise",
        "mul",
        "--sigmas",
        "0.5,1e6,1e10",
        "--repeats",
        "2",
        "--quiet",
        "--mode",
        "global",
        "--out",
        out,
    )
    assert res.returncode == 0, res.stderr
    g = json.loads(out.read_text())["global"]
    assert sum(map(sum, g["nonfinite"])) > 0 and g["status"]


def test_cuda_request_without_gpu_is_clear():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    res = wn("scan", "--device", "cuda", *FAST)
    assert res.returncode == 2 and "onnxruntime-gpu" in res.stderr


def test_output_picks_the_scored_head_and_drops_the_others(tmp_path):
    """A two-headed torch model: --graph-output chooses the head; the other head's layers are no
    points (noise there cannot reach the scored output); an unknown name is exit 2."""
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.main, self.aux = nn.Linear(16, 32), nn.Linear(32, 10), nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.body(x))
            return self.main(h), torch.tanh(self.aux(h))

    torch.manual_seed(0)
    net, path = TwoHeads().eval(), tmp_path / "two.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 16),), str(path), dynamo=False, input_names=["input"],
                          output_names=["main", "aux"], dynamic_axes={"input": {0: "N"}})  # fmt: skip
    rng = np.random.default_rng(0)  # labels valid for both heads (10 and 4 classes), each head above chance
    x = rng.standard_normal((64, 16)).astype(np.float32)
    with torch.no_grad():
        main, aux = (h.argmax(1).numpy() for h in net(torch.from_numpy(x)))
    np.savez(tmp_path / "d.npz", x=x, y=np.where(main < 4, main, aux))
    listed = {}
    for head in ("main", "aux"):
        res = wn("points", path, "--graph-output", head, "--json")
        assert res.returncode == 0, res.stderr
        listed[head] = [(p["tensor"], p["op_type"]) for p in json.loads(res.stdout)["points"]]
    assert listed["main"][-1] == ("main", "Gemm") and listed["aux"][-1] == ("aux", "Tanh")
    assert not {t for t, _ in listed["main"]} & {"aux"} and not {t for t, _ in listed["aux"]} & {"main"}
    assert listed["main"][:-1] == listed["aux"][:3]  # the shared body, same indices
    reports = {}
    for head in ("main", "aux"):  # the same --out: resuming must not hand main's curves to aux
        res = wn("scan", path, "--data", tmp_path / "d.npz", "--graph-output", head, "--resume",
                 "--out", tmp_path / "r.json", "--json", *FAST)  # fmt: skip
        assert res.returncode == 0, res.stderr
        reports[head] = json.loads(res.stdout)
    assert reports["aux"]["output"] == "aux" and reports["aux"]["num_classes"] == 4
    assert reports["main"]["config_hash"] != reports["aux"]["config_hash"]
    assert reports["main"]["points"][1]["accuracy"] != reports["aux"]["points"][1]["accuracy"]
    res = wn("scan", path, "--data", tmp_path / "d.npz", "--label-free", "--graph-output", "nope", *FAST)
    assert res.returncode == 2 and "no graph output 'nope'" in res.stderr and "main, aux" in res.stderr
