"""Hostile input, class by class (issue: hardening): each case is built small here, run through
the CLI, and must end with exit 2 and one stderr line without a traceback, change no file but
the named outputs, and stay within bounded memory where sizes are declared by the input.

Most cases run in-process (fast on 2 cores); signals, environment and memory limits use real
processes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import math
import os
import pickle
import re
import resource
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import Ran, like_a_shell, wn, wn_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.errors import WnError
from wn_onnx.io import safeio

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs, signals, rlimits")

GRID = ["--sigmas", "lin:0:1:3", "--repeats", "1"]
FAST = [*GRID, "--quiet"]


# ---------------------------------------------------------------- harness
def snapshot(folder: Path) -> dict[str, str]:
    """Path → content hash of every regular file under ``folder`` (FIFOs and devices skipped)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            files[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


CASES: list[str] = []  # one entry per hostile case tried (the count goes to the report)


def refused(res: Ran, message: str, case: str = "") -> None:
    code, err = res.returncode, res.stderr
    CASES.append(case or message)
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    assert message in err, err


def refused_untouched(folder: Path, message: str, *args) -> Ran:
    """``args`` fail with ``message`` and leave every file in ``folder`` as it was."""
    before = snapshot(folder)
    res = wn(*args)
    refused(res, message, " ".join(map(str, args))[:120])
    assert snapshot(folder) == before
    return res


# ---------------------------------------------------------------- builders
def tiny_model(path: Path, out_dims=("N", 3), external: str | None = None, weights=None, metadata=None) -> Path:
    """x (N, 4) → MatMul → y; ``external``: weights in that file beside the model."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32) if weights is None else weights, "w")
    if external:
        w.data_location = TensorProto.EXTERNAL
        w.ClearField("raw_data")
        w.external_data.add(key="location", value=external)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    width = int(np.prod([d for d in out_dims[1:] if isinstance(d, int)]))
    if len(out_dims) != 2 or width != 3:
        nodes.append(helper.make_node("Reshape", ["y", "shape"], ["z"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, list(out_dims))],
                              [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def six_wide_model(path: Path, out_dims) -> Path:
    """x (N, 4) → MatMul (4×6) → Reshape (-1, 2, 3): scores that are not one vector per sample."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, list(out_dims))], [w, shape])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def data(path: Path, x=None, y=None, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32) if x is None else x
    y = np.where(np.arange(len(x)) % 2, np.arange(len(x)) % 3, 0) if y is None else y  # above chance for tiny_model
    np.savez(path, x=x, y=y)
    return path


def npz_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED, flag_bits: int = 0) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, payload in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            info.flag_bits |= flag_bits
            z.writestr(info, payload)
    return buf.getvalue()


def npy_header(shape: tuple, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A working folder with a tiny model and data; the cwd, so nothing lands elsewhere unseen."""
    monkeypatch.chdir(tmp_path)
    tiny_model(tmp_path / "m.onnx")
    data(tmp_path / "d.npz")
    return tmp_path


def stored(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM curves").fetchone()[0]


# ---------------------------------------------------------------- 1. resume key
def test_resume_key_covers_external_weights_batch_size_and_device(ws):
    (ws / "ext").mkdir()
    model = tiny_model(ws / "ext" / "m.onnx", external="w.bin")
    (ws / "ext" / "w.bin").write_bytes(np.ones((4, 3), np.float32).tobytes())
    args = ["scan", model, "--data", ws / "d.npz", "--mode", "global", *FAST, "--out", ws / "r.json", "--resume"]
    assert wn(*args).returncode == 0
    first = json.loads((ws / "r.json").read_text())
    (ws / "ext" / "w.bin").write_bytes((-np.eye(4, 3, dtype=np.float32)).tobytes())  # other weights, above chance too
    assert wn(*args).returncode == 0
    assert stored(ws / "r.json.sqlite") == 2  # other weights: a new curve, not the old one reused
    second = json.loads((ws / "r.json").read_text())
    assert (
        second["global"]["accuracy"] != first["global"]["accuracy"]
        or second["clean_accuracy"] != first["clean_accuracy"]
    )
    assert wn(*args, "--batch-size", "2").returncode == 0
    assert stored(ws / "r.json.sqlite") == 3
    CASES.extend(["resume: replaced external weights", "resume: other --batch-size"])


# ---------------------------------------------------------------- 2. NaN/Inf reaching the model
def write_idx(path: Path, array: np.ndarray, code: int) -> None:
    head = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(head + array.astype(array.dtype.newbyteorder(">")).tobytes()))


def image_model(path: Path, metadata: dict | None = None, shape: tuple = (1, 28, 28), classes: int = 10) -> Path:
    """(N, *shape) → Flatten → MatMul → (N, classes), for --dataset fashion-mnist (cifar10: 3×32×32, …)."""
    size = int(np.prod(shape))
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((size, classes)).astype(np.float32) * 0.01, "w"
    )
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def fashion_folder(folder: Path, images: np.ndarray, code: int = 0x08) -> Path:
    folder.mkdir(exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images, code)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(len(images), dtype=np.uint8) % 10, 0x08)
    return folder


def test_nonfinite_inputs_never_reach_the_model(ws):
    refused_untouched(ws, "overflow to Inf as float32", "scan", ws / "m.onnx", "--data",
                      data(ws / "big.npz", x=np.full((4, 4), 1e39)), *FAST)  # fmt: skip
    ok = fashion_folder(ws / "fm", np.zeros((4, 28, 28), np.uint8))
    for meta, message in [
        ({"wn_onnx.normalization": json.dumps({"mean": [0.5], "std": [0.0]})}, "std > 0"),
        ({"wn_onnx.normalization": "{not json"}, "not {'mean'"),
        ({"wn_onnx.normalization": json.dumps({"mean": [0.1, 0.2], "std": [1, 1]})}, "one per channel"),
        ({"wn_onnx.normalization": json.dumps({"mean": "x", "std": [1]})}, "wn_onnx.normalization"),
        ({"wn_onnx.normalization": json.dumps([1, 2])}, "wn_onnx.normalization"),
    ]:
        model = image_model(ws / "img.onnx", meta)
        refused_untouched(ws, message, "scan", model, "--dataset", "fashion-mnist", "--data-dir", ok, *FAST)
    model = image_model(ws / "img.onnx")
    for images in (np.full((4, 28, 28), np.nan, np.float32), np.full((4, 28, 28), 1e300)):
        bad = fashion_folder(ws / "fm_bad", images, 0x0D if images.dtype == np.float32 else 0x0E)
        refused_untouched(ws, "NaN or values beyond float32", "scan", model, "--dataset", "fashion-mnist",
                          "--data-dir", bad, *FAST)  # fmt: skip


# ---------------------------------------------------------------- 3, 17. what is scored
def test_scores_must_be_one_vector_per_sample(ws):
    """Whatever the declared shape, an output that fits no metric is refused with its shape, never
    flattened into 6 classes; per-position takes it, with labels shaped like its positions."""
    for dims in (["N", 2, 3], ["N", "a", "b"], ["N"]):
        model = six_wide_model(ws / "s.onnx", dims)
        refused_untouched(ws, "not an output of shape 6×2×3", "scan", model, "--data", ws / "d.npz", *FAST)
    refused_untouched(ws, "labels y have shape (6,); --metric per-position on an output of shape 6×2×3 needs (6, 2)",
                      "scan", model, "--data", ws / "d.npz", "--metric", "per-position", *FAST)  # fmt: skip


def test_sequence_and_map_outputs_are_not_scored(ws):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    seq = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("SequenceConstruct", ["y", "y"], ["s"])],
        "g", [x], [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)], [w],
    )  # fmt: skip
    onnx.save(helper.make_model(seq, opset_imports=[helper.make_opsetid("", 17)]), str(ws / "seq.onnx"))
    refused_untouched(ws, "no float output to score", "scan", ws / "seq.onnx", "--data", ws / "d.npz", *FAST)
    zipmap = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("ZipMap", ["y"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])],
        "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                   helper.make_value_info("z", helper.make_sequence_type_proto(
                       helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
        [w],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    onnx.save(helper.make_model(zipmap, opset_imports=opsets), str(ws / "zipmap.onnx"))
    refused_untouched(ws, "output 'z' is a map (ZipMap)", "scan", ws / "zipmap.onnx", "--data", ws / "d.npz", *FAST)


# ---------------------------------------------------------------- 4, 19. typed configs
CHECK = ["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('label_free = "false"', "label_free = 'false' must be true or false"),
        ('min_mu = "0.2"', "min_mu = '0.2' must be a finite number >= 0"),
        ('repeats = "many"', "repeats = 'many' must be a whole number"),
        ("repeats = 0", "repeats = 0 must be a whole number in [1,"),
        ("repeats = 1000000000", "repeats = 1000000000 must be"),
        ("seed = -1", "seed = -1 must be a whole number in [0,"),
        ("seed = 1.5", "seed = 1.5 must be"),
        ("min_mu = nan", "min_mu = nan must be a finite number"),
        ("limit = true", "limit = True must be a whole number >= 1"),
        ('noise = "loud"', "noise = 'loud' must be add, mul, mixed, quant, bitflip, pcm, converters or module:Name"),
        ("sigmas = [0.1, -1]", "sigmas = [0.1, -1] must be"),
        ("sigmas = []", "sigmas = [] must be a grid string"),
        ('sigmas = [""]', "sigmas = [''] must be a grid string"),
        ('[points]\n"op:Gemm" = "high"', "points = {'op:Gemm': 'high'} must be a table"),
        ("points = 3", "points = 3 must be a table"),
        ("mode = 1", "mode = 1 must be walking, global or both"),
        ("colour = 1", "unknown key(s) colour"),
        ("label_free = ", "malformed TOML"),
    ],
)
def test_check_config_values_are_typed(ws, toml, message):
    (ws / "wn-onnx.toml").write_text(toml + "\n")
    refused_untouched(ws, message, *CHECK)


def test_pyproject_tool_table_must_be_a_table(ws):
    (ws / "pyproject.toml").write_text("tool = 3\n")
    refused_untouched(ws, "[tool.wn-onnx] must be a table", *CHECK)
    (ws / "pyproject.toml").write_text('[tool.wn-onnx]\nlabel_free = "false"\n')
    refused_untouched(ws, "label_free = 'false'", *CHECK)


SWEEP = """dataset = "npz"
arch = "mlp"
sigmas = [0.1]
seeds = [0]
epochs = 1
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('bn = "false"', "bn = 'false' must be true or false"),
        ('training_noise = "false"', "training_noise = 'false' must be true or false"),
        ('bn = [true, "no"]', "must be true or false (or a list of them)"),
        ('seeds = ["a"]', "seeds = ['a'] must be a whole number"),
        ("eval_repeats = 0", "eval_repeats = 0 must be"),
        ('epochs = "ten"', "epochs = 'ten' must be a whole number in [1, 10000]"),
        ("epochs = 1000000000000", "epochs = 1000000000000 must be a whole number in [1, 10000]"),
        ('arch = "nope"\npoints = [0]', "unknown arch 'nope'"),
        ("points = [99]", "point 99 out of range: mlp with BatchNorm has 11 points (0-10)"),
        ("bn = [true, false]\npoints = [9]", "point 9 out of range: mlp without BatchNorm has 8 points"),
        ("lr = nan", "lr = nan must be a finite number > 0"),
        ("clamp = [false, nan]", "clamp = [False, nan] must be false or a finite number > 0"),
        ("clamp = true", "clamp = True must be false or"),
        ("points = [-1]", "points = [-1] must be"),
        ('points = ["every"]', "points = ['every'] must be"),
        ("sigmas = [nan]", "sigmas = [nan] must be"),
        ("sigmas = [-1]", "sigmas = [-1] must be"),
        ('sigmas = "log:1:10:10000000000"', "at most 10000"),
        ("batch_size = 0", "batch_size = 0 must be"),
    ],
)
def test_sweep_values_are_typed(ws, extra, message):
    key = extra.split("=")[0].strip()
    text = "\n".join(line for line in SWEEP.splitlines() if not line.startswith(key + " ")) + "\n" + extra + "\n"
    (ws / "s.toml").write_text(text)
    refused_untouched(ws, message, "sweep", "plan", ws / "s.toml")


# ---------------------------------------------------------------- 5. training that cannot be trusted
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise", "add", "--sigma", "nan"], "--sigma must be a finite number >= 0"),
        (["--noise", "add", "--sigma", "inf"], "--sigma must be a finite number >= 0"),
        (["--clamp", "nan"], "--clamp must be a finite number > 0"),
        (["--clamp", "-1"], "--clamp must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--epochs", "0"], "Invalid value for '--epochs'"),
        (["--epochs", "1000000000000"], "Invalid value for '--epochs'"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
    ],
)
def test_train_refuses_values_that_train_nan_networks(ws, args, message):
    refused_untouched(ws, message, "train", "--epochs", "1", *args, "--out", ws / "t.onnx", "--quiet")


def test_train_refuses_data_beyond_float32_and_negative_labels(ws):
    big = data(ws / "big.npz", x=np.full((8, 4), 1e39))
    refused_untouched(
        ws, "beyond float32's range", "train", "--dataset", "npz", "--data", big, "--out", ws / "t.onnx", "--quiet"
    )
    neg = data(ws / "neg.npz", y=np.array([0, 1, -1, 2, 0, 1]))
    refused_untouched(
        ws, "labels must be >= 0", "train", "--dataset", "npz", "--data", neg, "--out", ws / "t.onnx", "--quiet"
    )


# ---------------------------------------------------------------- 6, 7. sweeps
def test_sweep_run_counts_runs_whose_retries_are_used_up_as_failed(ws):
    (ws / "s.toml").write_text(SWEEP + "points = [0]\n")  # npz without a data file: every run fails at once
    first = wn("sweep", "run", ws / "s.toml", "--workers", "0", "--retries", "0", "--quiet")
    assert first.returncode == 1 and "0/1 runs done, 1 failed" in first.stdout
    again = wn("sweep", "run", ws / "s.toml", "--workers", "0", "--retries", "0", "--quiet")
    assert again.returncode == 1 and "0/1 runs done, 1 failed" in again.stdout, again
    assert "failed 1" in wn("sweep", "status", ws / "s.toml").stdout
    CASES.append("sweep run after retries used up")


def test_sweep_clients_claim_runs_and_a_crashed_client_frees_them(ws):
    import socket

    from wn_onnx.training.sweep import RunStore, load_sweep

    (ws / "s.toml").write_text(SWEEP + "points = [0]\n")
    sweep = load_sweep(ws / "s.toml")
    other = subprocess.Popen(["sleep", "60"])  # a live client on this machine holds the run
    try:
        store = RunStore(sweep.db_path)
        store.mark(sweep.runs[0], "running", error=f"running in {socket.gethostname()} pid {other.pid}")
        store.close()
        res = wn("sweep", "run", "s.toml", "--workers", "0", "--quiet")
        assert res.returncode == 0 and "0/1 runs done, 0 failed, 1 running in another client" in res.stdout, res
        assert "running 1" in wn("sweep", "status", "s.toml").stdout
    finally:
        other.kill()
        other.wait()
    assert "pending 1" in wn("sweep", "status", "s.toml").stdout  # its client is gone
    res = wn("sweep", "run", "s.toml", "--workers", "0", "--retries", "0", "--quiet")
    assert res.returncode == 1 and "0/1 runs done, 1 failed" in res.stdout, res  # taken again (and failing: no data)
    CASES.extend(["sweep run claimed by a live client", "sweep run left running by a dead client"])


def test_points_all_means_each_point_in_a_training_noise_sweep(ws):
    from wn_onnx.training.sweep import load_sweep

    (ws / "s.toml").write_text(SWEEP + 'points = "all"\nbn = [true, false]\n')
    runs = load_sweep(ws / "s.toml").runs
    assert sorted(r["point"] for r in runs if r["bn"]) == list(range(11))
    assert sorted(r["point"] for r in runs if not r["bn"]) == list(range(8))
    (ws / "s.toml").write_text(SWEEP.replace('"mlp"', '"vgg"') + 'points = "all"\n')
    refused_untouched(ws, "unknown arch 'vgg'", "sweep", "plan", ws / "s.toml")
    CASES.append('sweep points = "all"')


# ---------------------------------------------------------------- 8, 19. reports read back
def report(**changes) -> dict:
    curve = {"sigmas": [0.1, 1.0], "accuracy": [[0.9], [0.2]], "mu": 0.5, "mu_err": 0.05, "a_max": 0.9, "a_min": 0.1,
             "status": "ok", "fit": {"note": ""}}  # fmt: skip
    base = {"schema_version": 1, "model": "m.onnx", "noise": {"kind": "add", "order": None}, "seed": 0, "clean_accuracy": 0.9,
            "num_classes": 3, "points": [{"index": 0, "tensor": "y", "op_type": "MatMul", "shape": [None, 3], **curve}],
            "global": {"points": [0], **curve}}  # fmt: skip
    for key, value in changes.items():
        if key.startswith("p_"):
            base["points"][0][key[2:]] = value
        else:
            base[key] = value
    return base


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"p_mu_err": 1e308}, "'mu_err' must be a finite number >= 0"),
        ({"p_mu_err": -0.1}, "'mu_err' must be a finite number >= 0"),
        ({"p_mu_err": float("nan")}, "'mu_err' must be"),
        ({"p_mu": "0.5"}, "'mu' must be a finite number >= 0 or null"),
        ({"p_mu": -0.5}, "'mu' must be a finite number >= 0 or null, not -0.5"),
        ({"p_sigmas": [1.0, 0.1]}, "'sigmas' must increase"),
        ({"schema_version": None}, "'schema_version' must be a whole number"),
        ({"p_mu": float("inf")}, "'mu' must be a finite number"),
        ({"p_mu": True}, "'mu' must be"),
        ({"p_fit": None}, "'fit' must be an object"),
        ({"p_index": "0"}, "'index' must be a whole number"),
        ({"p_tensor": 5}, "'tensor' must be a string"),
        ({"p_sigmas": ["a", "b"]}, "'sigmas' must be a list of finite numbers"),
        ({"p_accuracy": [[2.0], [0.1]]}, "'accuracy' must be a list of rows of fractions"),
        ({"p_accuracy": [0.9, 0.2]}, "'accuracy' must be a list of rows"),
        ({"clean_accuracy": "high"}, "'clean_accuracy' must be a fraction"),
        ({"num_classes": -3}, "'num_classes' must be a whole number"),
        ({"noise": "add"}, "'noise' must be an object"),
        ({"points": {}}, "'points' is not a list"),
    ],
)
def test_reports_are_validated_where_read(ws, changes, message):
    """One reader, the same rules for every command that reads a report back."""
    (ws / "b.json").write_text(json.dumps(report(**changes)))
    refused_untouched(ws, message, "check", ws / "m.onnx", "--data", ws / "d.npz", "--baseline", ws / "b.json", *GRID)
    refused_untouched(ws, message, "plan", ws / "b.json")
    refused_untouched(ws, message, "report", ws / "b.json", "--html", ws / "r.html")


def test_a_report_without_schema_version_is_refused(ws):
    doc = report()
    del doc["schema_version"]
    (ws / "b.json").write_text(json.dumps(doc))
    for command in (["report", "--html", ws / "r.html"], ["plan"],
                    ["check", ws / "m.onnx", "--data", ws / "d.npz", *GRID, "--baseline"]):  # fmt: skip
        refused_untouched(ws, "missing key 'schema_version'", *command, ws / "b.json")


def test_report_files_that_are_not_reports(ws):
    (ws / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    refused_untouched(ws, "nested too deeply", "plan", ws / "deep.json")
    (ws / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    refused_untouched(ws, "is not UTF-8 text", "plan", ws / "bin.json")
    refused_untouched(ws, "report not found", "plan", ws / "none.json")


# ---------------------------------------------------------------- 9. outputs never overwrite inputs
def test_outputs_that_name_an_input_are_refused(ws):
    (ws / "b.json").write_text(json.dumps(report()))
    (ws / "plan.json").write_text(json.dumps({"points": [{"index": 1, "tensor": "y"}], "executions": [2]}))
    for args in (
        ["scan", "m.onnx", "--data", "d.npz", "--out", "m.onnx", *FAST],
        ["scan", "m.onnx", "--data", "d.npz", "--out", "d.npz", *FAST],
        ["scan", "m.onnx", "--data", "d.npz", "--out", "./sub/../d.npz", *FAST],
        ["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1", "--junit", "m.onnx", *GRID],
        ["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1", "--summary", "d.npz", *GRID],
        ["check", "m.onnx", "--data", "d.npz", "--baseline", "b.json", "--out", "b.json", *GRID],
        ["apply-plan", "m.onnx", "plan.json", "--out", "m.onnx"],
        ["apply-plan", "m.onnx", "plan.json", "--out", "plan.json"],
        ["report", "b.json", "--html", "b.json"],
        ["plan", "b.json", "--out", "b.json"],
        ["analyze", "binarize", "m.onnx", "--data", "d.npz", "--at", "0", "--out", "d.npz"],
        ["analyze", "mixed", "m.onnx", "--data", "d.npz", "--at", "0", "--html", "m.onnx"],
    ):
        (ws / "sub").mkdir(exist_ok=True)
        refused_untouched(ws, "is the input", *args)


# ---------------------------------------------------------------- 11. nothing written outside named paths
def test_a_scan_writes_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), TMPDIR=str(tmp_path))
    res = wn_process("scan", "--mode", "global", *FAST, "--out", tmp_path / "r.json", env=env)
    assert res.returncode == 0, res.stderr
    assert list(home.rglob("*")) == []  # onnxruntime's telemetry database would be under ~/.cache/Microsoft
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "r.json", "r.json.sqlite"]
    CASES.append("HOME untouched by a scan")


# ---------------------------------------------------------------- 12, 16. containers
def test_npz_bombs_are_measured_before_they_are_read(ws, monkeypatch):
    monkeypatch.setattr(safeio, "memory_budget", lambda: 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:  # 64 MB of zeros in about 64 KB
            f.write(npy_header((4 << 20, 4)))
            for _ in range(64):
                f.write(bytes(1 << 20))
        z.writestr("y.npy", npy(np.zeros(4 << 20, np.int8)))
    (ws / "bomb.npz").write_bytes(buf.getvalue())
    assert (ws / "bomb.npz").stat().st_size < 1 << 20
    refused_untouched(ws, "over the memory budget", "scan", "m.onnx", "--data", "bomb.npz", *FAST)
    # reads 10 rows only (a stratified --limit must read every label first: 4 MB here, over the budget)
    res = wn("scan", "m.onnx", "--data", "bomb.npz", "--limit", "10", "--limit-mode", "first", *FAST, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["data"]["samples"] == 10, res.stderr
    CASES.append("npz bomb with --limit 10")


def test_idx_bomb_is_measured_before_it_is_decompressed(ws, monkeypatch):
    from wn_onnx.io.datasets.idx import read_idx

    monkeypatch.setattr(safeio, "memory_budget", lambda: 1 << 20)
    head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (1 << 20, 28, 28))
    (ws / "bomb.gz").write_bytes(gzip.compress(head + bytes(28 * 28 * 20)))
    with pytest.raises(WnError, match="over the memory budget"):
        read_idx(ws / "bomb.gz")
    assert read_idx(ws / "bomb.gz", limit=20).shape == (20, 28, 28)
    CASES.extend(["idx bomb", "idx bomb with limit"])


def test_a_declared_50_gb_array_is_refused_within_a_memory_limit(tmp_path):
    liar = tmp_path / "liar.npz"
    liar.write_bytes(npz_bytes({"x.npy": npy_header((50 << 30 >> 4, 4)) + bytes(64), "y.npy": npy(np.zeros(4, int))}))
    tiny_model(tmp_path / "m.onnx")
    before = snapshot(tmp_path)
    res = wn_process("scan", tmp_path / "m.onnx", "--data", liar, *FAST, memory=3 << 30)
    refused(res, "declares 53687091200 bytes but holds", "npz declaring 50 GB")
    assert snapshot(tmp_path) == before


def cifar_pickle(folder: Path, batch: dict) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def test_cifar_pickles_that_unfold_are_refused_before_arrays_are_built(ws, monkeypatch):
    from wn_onnx.io.datasets.cifar import cifar10

    row = np.zeros((10, 3072), np.uint8)
    inner = [0] * 10_000
    nested = [[inner] * 10_000] * 10  # one pickled list, shared by reference: 10^9 labels from a few KB
    cases = {
        "nested": ({b"data": row, b"labels": nested}, "b'labels' holds something other than integers"),
        "short": ({b"data": row, b"labels": [[inner] * 10_000]}, "not a list of 10 labels"),
        "list": ({b"data": [[inner] * 10_000] * 10, b"labels": [0] * 10}, "b'data' is not a uint8 array"),
        "floats": ({b"data": row.astype(np.float64), b"labels": [0] * 10}, "b'data' is not a uint8 array"),
        "ragged": ({b"data": np.zeros(3000, np.uint8), b"labels": []}, "b'data' is not a uint8 array"),
    }
    for name, (batch, message) in cases.items():
        folder = cifar_pickle(ws / name, batch)
        assert (folder / "test_batch").stat().st_size < 1 << 20
        with pytest.raises(WnError, match=re.escape(message)):
            cifar10(folder, "test")
        CASES.append(f"cifar pickle: {name}")
    good = cifar_pickle(ws / "good", {b"data": row, b"labels": list(range(10))})
    assert cifar10(good, "test")[1].tolist() == list(range(10))
    binary = ws / "bin"
    binary.mkdir()
    np.zeros((30, 3073), np.uint8).tofile(binary / "test_batch.bin")
    assert len(cifar10(binary, "test", first=7)[0]) == 7  # --limit-mode first reads 7 records only
    monkeypatch.setattr(safeio, "memory_budget", lambda: 20_000)
    for folder in (good, binary):
        with pytest.raises(WnError, match="over the memory budget"):
            cifar10(folder, "test")
    CASES.extend(["cifar python batch over the budget", "cifar binary batch over the budget"])


def test_a_cifar_pickle_bomb_is_one_line_within_a_memory_limit(tmp_path):
    folder = cifar_pickle(tmp_path / "c", {b"data": np.zeros((10, 3072), np.uint8),
                                           b"labels": [[[0] * 10_000] * 10_000] * 10})  # fmt: skip
    model = image_model(tmp_path / "c.onnx", shape=(3, 32, 32))
    res = wn_process("scan", model, "--dataset", "cifar10", "--data-dir", folder, *FAST, memory=3 << 30)
    refused(res, "b'labels' holds something other than integers", "cifar pickle bomb under a 3 GB limit")


def mat_element(kind: int, data: bytes) -> bytes:
    return struct.pack("<II", kind, len(data)) + data + bytes(-len(data) % 8)


def mat_matrix(name: bytes, dims: tuple, data_bytes: int, data: bytes = b"") -> bytes:
    """A MATLAB v5 uint8 matrix whose data element declares ``data_bytes`` (followed by ``data``)."""
    body = mat_element(6, struct.pack("<II", 9, 0)) + mat_element(5, struct.pack(f"<{len(dims)}i", *dims))
    body += mat_element(1, name) + struct.pack("<II", 2, data_bytes) + data
    return struct.pack("<II", 14, len(body)) + body


def mat_file(*variables: bytes) -> bytes:
    return (
        b"MATLAB 5.0 MAT-file, hostile".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM" + b"".join(variables)
    )


def mat_compressed(head: bytes, zeros: int) -> bytes:
    """``head`` then ``zeros`` zero bytes, as one miCOMPRESSED element (a thousandth of the size)."""
    z = zlib.compressobj()
    out = z.compress(head) + b"".join(z.compress(bytes(1 << 20)) for _ in range(zeros >> 20)) + z.flush()
    return struct.pack("<II", 15, len(out)) + out


def test_svhn_mat_declared_sizes_are_checked_before_loading(ws, monkeypatch):
    from wn_onnx.io.datasets.svhn import svhn

    n = (64 << 20) // 3072
    (ws / "bomb").mkdir()
    (ws / "bomb" / "test_32x32.mat").write_bytes(mat_file(
        mat_compressed(mat_matrix(b"X", (32, 32, 3, n), n * 3072), n * 3072),
        mat_matrix(b"y", (n, 1), n, bytes(n))))  # fmt: skip
    assert (ws / "bomb" / "test_32x32.mat").stat().st_size < 1 << 20
    monkeypatch.setattr(safeio, "memory_budget", lambda: 1 << 20)
    with pytest.raises(WnError, match=r"declares 0\.31\d GiB of data, over the memory budget"):  # X and its float32 copy
        svhn(ws / "bomb", "test")
    (ws / "noy").mkdir()
    (ws / "noy" / "test_32x32.mat").write_bytes(mat_file(mat_matrix(b"X", (32, 32, 3, 1), 3072, bytes(3072))))
    with pytest.raises(WnError, match="expected arrays X and y"):
        svhn(ws / "noy", "test")
    CASES.extend(["svhn .mat zlib bomb", "svhn .mat without y"])


def test_an_svhn_mat_declaring_terabytes_is_one_line_within_a_memory_limit(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "test_32x32.mat").write_bytes(mat_file(
        mat_matrix(b"X", (32, 32, 3, 2**31 - 1), 0), mat_matrix(b"y", (2**31 - 1, 1), 0)))  # fmt: skip
    model = image_model(tmp_path / "s.onnx", shape=(3, 32, 32))
    res = wn_process("scan", model, "--dataset", "svhn", "--data-dir", tmp_path / "s", *FAST, memory=3 << 30)
    refused(res, "GiB of data, over the memory budget of", "svhn .mat declaring 6.6 TB under a 3 GB limit")


def wav_bytes(declared: int, samples: np.ndarray) -> bytes:
    """A 16 kHz mono 16-bit WAV whose data chunk declares ``declared`` bytes."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared)
    return b"RIFF" + struct.pack("<I", len(body) + samples.nbytes) + body + samples.astype("<i2").tobytes()


def test_a_wav_declaring_4_gb_is_one_line_within_a_memory_limit(tmp_path):
    from wn_onnx.io.datasets.speech_commands import read_wav

    root = tmp_path / "sc"
    (root / "yes").mkdir(parents=True)
    clip = (np.sin(np.arange(16000) / 5) * 3000).astype(np.int16)
    (root / "yes" / "a.wav").write_bytes(wav_bytes(clip.nbytes, clip))
    (root / "yes" / "liar.wav").write_bytes(wav_bytes(0xFFFFFFF0, clip[:1600]))
    (root / "validation_list.txt").write_text("yes/a.wav\n")
    (root / "testing_list.txt").write_text("yes/liar.wav\n")
    assert read_wav(root / "yes" / "a.wav", 100).shape == (100,)  # only what a clip needs is copied
    with pytest.raises(WnError, match="not a readable WAV file"):
        read_wav(root / "yes" / "liar.wav")
    model = image_model(tmp_path / "kws.onnx", shape=(1, 49, 10), classes=12)
    res = wn_process("scan", model, "--dataset", "speech-commands", "--split", "test", "--data-dir", root, *FAST,
                     memory=3 << 30)  # fmt: skip
    refused(res, "liar.wav: not a readable WAV file", "WAV declaring 4 GB of audio under a 3 GB limit")


def test_damaged_npz_containers(ws):
    good = npz_bytes({"x.npy": npy(np.ones((6, 4), np.float32)), "y.npy": npy(np.arange(6) % 3)})
    crc = bytearray(good)
    crc[good.index(b"\x00\x00\x80?") + 2] ^= 0xFF  # a flipped bit in x's data
    deflate64 = bytearray(good)
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = -1
        while (at := deflate64.find(sig, at + 1)) >= 0:
            deflate64[at + offset] = 9
    cases = {
        "truncated.npz": (good[: len(good) // 2], "not a readable .npz archive"),
        "crc.npz": (bytes(crc), "Bad CRC-32"),
        "encrypted.npz": (npz_bytes({"x.npy": npy(np.ones((6, 4), np.float32))}, flag_bits=1), "encrypted"),
        "deflate64.npz": (bytes(deflate64), "not a readable .npz archive"),
        "plain.npz": (npy(np.ones((6, 4), np.float32)), "not a readable .npz archive"),
        "text.npz": (npz_bytes({"x.npy": b"hello"}), "is not an npy array"),
        "objects.npz": (npz_bytes({"x.npy": npy_header((2,), "|O") + bytes(16)}), "pickled Python objects"),
        "nox.npz": (npz_bytes({"a.npy": npy(np.ones(3))}), "no array named 'x'"),
    }  # fmt: skip
    for name, (payload, message) in cases.items():
        (ws / name).write_bytes(payload)
        refused_untouched(ws, message, "scan", "m.onnx", "--data", name, *FAST)
    np.save(ws / "plain.npy", np.ones((6, 4), np.float32))  # streamed inputs: labels must come with them
    refused_untouched(ws, "no labels (give them as a .npy", "scan", "m.onnx", "--data", "plain.npy", *FAST)
    (ws / "junk.npy").write_bytes(b"not an array")
    refused_untouched(ws, "junk.npy is not an npy array", "scan", "m.onnx", "--data", "junk.npy", *FAST)


def test_labels_must_be_one_per_sample(ws):
    data(ws / "y2.npz", y=np.zeros((6, 2), int))
    refused_untouched(ws, "labels y have shape (6, 2)", "scan", "m.onnx", "--data", "y2.npz", *FAST)
    data(ws / "neg.npz", y=np.array([0, 1, -1, 0, 1, 2]))
    refused_untouched(ws, "labels span [-1, 2]", "scan", "m.onnx", "--data", "neg.npz", *FAST)


# ---------------------------------------------------------------- 13, 20. downloads
class FakeResponse:
    def __init__(self, chunks: list[bytes], length: int | None = None, cut: bool = False) -> None:
        self.chunks, self.cut = list(chunks), cut
        self.headers = {"Content-Length": str(length)} if length else {}

    def read(self, _n: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.cut:
            raise http.client.IncompleteRead(b"", 100)
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (lambda: FakeResponse([bytes(1 << 20)] * 200), "sends more than the official file's 4542 bytes"),
        (lambda: FakeResponse([b"x"], length=200 << 20), "sends more than the official file's"),
        (lambda: FakeResponse([b"abc"], cut=True), "download of"),
        (lambda: FakeResponse([b"abc"]), "does not match the official"),
    ],
)
def test_downloads_are_capped_and_leave_no_part_file(ws, monkeypatch, response, message):
    from wn_onnx.io.datasets import fetch

    label_file = next(r for r in fetch.RESOURCES["mnist"] if r.url.endswith("t10k-labels-idx1-ubyte.gz"))
    monkeypatch.setitem(fetch.RESOURCES, "mnist", [label_file])
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda *_a, **_k: response())
    refused(wn("data", "fetch", "mnist", "--target", ws / "mnist"), message)
    assert list((ws / "mnist").iterdir()) == []


def test_fetch_target_that_is_a_file(ws):
    refused_untouched(ws, "is a file, not a folder", "data", "fetch", "mnist", "--target", "d.npz")


# ---------------------------------------------------------------- 14. outputs that cannot be written
def test_outputs_that_cannot_be_written(ws):
    (ws / "b.json").write_text(json.dumps(report()))
    (ws / "plan.json").write_text(json.dumps({"points": [{"index": 1, "tensor": "y"}], "executions": [2]}))
    long = "x" * 300 + ".json"
    for args, message in [
        (["scan", "m.onnx", "--data", "d.npz", "--out", "d.npz/r.json", *FAST], "cannot create curve store"),
        (["scan", "m.onnx", "--data", "d.npz", "--out", long, *FAST], "cannot create curve store"),
        (
            ["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1", "--junit", "d.npz/j.xml", *GRID],
            "cannot write d.npz/j.xml",
        ),
        (["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1", "--summary", long, *GRID], "cannot write"),
        (["apply-plan", "m.onnx", "plan.json", "--out", "d.npz/x.onnx"], "cannot write d.npz/x.onnx"),
        (["report", "b.json", "--html", "d.npz/r.html"], "cannot access d.npz"),
        (["plan", "b.json", "--out", long], "cannot write"),
    ]:
        refused_untouched(ws, message, *args)
    res = wn("scan", "m.onnx", "--data", "d.npz", "--out", "new/deeper/r.json", *FAST)
    assert res.returncode == 0 and (ws / "new/deeper/r.json").is_file(), res.stderr  # a missing folder is created
    CASES.append("scan --out into a missing folder")


def test_a_full_disk_is_one_line(tmp_path):
    """A file-size limit makes writes fail the way a full disk does (EFBIG / SQLITE_FULL)."""
    (tmp_path / "b.json").write_text(json.dumps(report()))
    tiny_model(tmp_path / "m.onnx")
    data(tmp_path / "d.npz")

    for args, message, size in [
        (["scan", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", *FAST, "--out", tmp_path / "r.json"],
         "(is the disk full?)", 3000),
        (["plan", tmp_path / "b.json", "--out", tmp_path / "p.json"], "cannot write", 100),
    ]:  # fmt: skip

        def small_files(size: int = size) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        res = subprocess.run([sys.executable, "-m", "wn_onnx", *map(str, args)], capture_output=True, text=True,
                             timeout=120, preexec_fn=small_files)  # fmt: skip
        refused(res, message, "full disk: " + args[0])
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "p.json.tmp").exists()


# ---------------------------------------------------------------- 15. damaged stores
def test_damaged_curve_stores(ws, monkeypatch):
    args = ["scan", "m.onnx", "--data", "d.npz", "--mode", "global", *FAST, "--out", "r.json", "--resume"]
    db = ws / "r.json.sqlite"
    db.write_bytes(b"garbage, not a database" * 100)
    refused(wn(*args), "r.json.sqlite is not a usable curve store", "garbage store")
    db.unlink()
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE curves (a, b)")
    refused(wn(*args), "is not a curve store of this wn-onnx version", "store of another schema")
    db.unlink()
    assert wn(*args).returncode == 0
    reference = json.loads((ws / "r.json").read_text())
    for bad in ("{}", "not json", '{"status": "ok"}', "[1, 2]"):
        with sqlite3.connect(db) as con:
            con.execute("UPDATE curves SET result = ?", (bad,))
        res = wn(*args)
        assert res.returncode == 0, res.stderr
        assert json.loads((ws / "r.json").read_text())["global"] == reference["global"]  # recomputed, not taken
        CASES.append(f"store row {bad}")
    size = db.stat().st_size
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.write_bytes(db.read_bytes()[: max(size // 2, 200)])
    res = wn(*args)
    assert res.returncode in (0, 2) and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 1, (
        res.stderr
    )
    CASES.append("truncated store")
    db.unlink()
    for extra in ("r.json.sqlite-wal", "r.json.sqlite-shm"):
        (ws / extra).unlink(missing_ok=True)
    assert wn(*args).returncode == 0
    from wn_onnx.results import store

    monkeypatch.setattr(store, "LOCK_SECONDS", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        refused(
            wn(*args, "--seed", "1"), "is locked by another wn-onnx process", "store locked"
        )  # a new curve to store
    finally:
        holder.close()


def test_damaged_sweep_store(ws):
    (ws / "s.toml").write_text(SWEEP)
    (ws / "s.toml.sqlite").write_bytes(b"\x00garbage" * 200)
    refused_untouched(ws, "is not a usable sweep store", "sweep", "status", "s.toml")
    (ws / "s.toml.sqlite").unlink()
    with sqlite3.connect(ws / "s.toml.sqlite") as con:
        con.execute("CREATE TABLE runs (key, status)")
    refused_untouched(ws, "is not a sweep store of this wn-onnx version", "sweep", "run", "s.toml", "--workers", "0")


# ---------------------------------------------------------------- 18. external data and paths
def test_external_data_that_cannot_be_opened(ws):
    (ws / "x").mkdir()
    os.symlink("loop", ws / "x" / "loop")
    for location, message in [
        ("loop", "cannot be opened"),
        ("a\x00b", "cannot be opened"),
        ("d" * 5000, "cannot be opened"),
        ("../d.npz", "lies outside the model's folder"),
        ("missing.bin", "not found next to the model"),
    ]:
        model = tiny_model(ws / "x" / "e.onnx", external=location)
        refused_untouched(ws, message, "points", model)
    refused_untouched(ws, "cannot be opened", "points", "m" * 5000 + ".onnx")
    refused_untouched(ws, "model file not found", "points", "missing.onnx")


# ---------------------------------------------------------------- 20, 24, 27. command-line values
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--seed", str(2**40)], "Invalid value for '--seed'"),
        (["--sigmas", "log:1:10:10000000000"], "at most 10000"),
        (["--sigmas", ",".join(["1"] * 20000)], "more than 10000 values"),
        (["--sigmas", "lin:-1:1:3"], "sigma grid 'lin:-1:1:3' must hold"),
        (["--at", "0-1000000000"], "point index 2 out of range (2 points"),
        (["--threads", "1000"], "Invalid value for '--threads'"),
        (["--jobs", "1000"], "Invalid value for '--jobs'"),
        (["--workers", "1000"], "Invalid value for '--workers'"),
        (["--repeats", "1000000000"], "Invalid value for '--repeats'"),
        (["--repeats", "0"], "Invalid value for '--repeats'"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--graph-output", "[/]r"], "no graph output '[/]r'"),
    ],
)
def test_scan_values_out_of_range(ws, args, message):
    refused_untouched(ws, message, "scan", "m.onnx", "--data", "d.npz", *FAST, *args)


@pytest.mark.parametrize(
    ("executions", "message"),
    [([0], "executions must be whole numbers in [1,"), ([-2], "whole numbers in [1,"), ([1.5], "whole numbers"),
     ([], "one count per point (1)"), ([2, 2], "one count per point"), ("3", "one count per point"),
     ([10**9], "whole numbers in [1, 10000]"), ([True], "whole numbers")],
)  # fmt: skip
def test_apply_plan_executions(ws, executions, message):
    (ws / "plan.json").write_text(json.dumps({"points": [{"index": 0, "tensor": "y"}], "executions": executions}))
    refused_untouched(ws, message, "apply-plan", "m.onnx", "plan.json", "--out", "o.onnx")


def test_apply_plan_files_that_are_not_plans(ws):
    for text, message in [("[", "not a wn-onnx plan"), ('{"points": [{"index": "0", "tensor": 1}], "executions": [1]}',
                          "points need an integer index"), ("[" * 100_000, "not a wn-onnx plan")]:  # fmt: skip
        (ws / "plan.json").write_text(text)
        refused_untouched(ws, message, "apply-plan", "m.onnx", "plan.json", "--out", "o.onnx")


def test_other_commands_out_of_range(ws):
    (ws / "s.toml").write_text(SWEEP)
    for args, message in [
        (
            ["analyze", "binarize", "m.onnx", "--data", "d.npz", "--at", "0", "--follow", "-3"],
            "Invalid value for '--follow'",
        ),
        (
            ["analyze", "mixed", "m.onnx", "--data", "d.npz", "--at", "0", "--repeats", "0"],
            "Invalid value for '--repeats'",
        ),
        (["sweep", "run", "s.toml", "--workers", "-2"], "Invalid value for '--workers'"),
        (["sweep", "run", "s.toml", "--retries", "-1"], "Invalid value for '--retries'"),
        (["plan", "x.json", "--repeats", "0"], "Invalid value for '--repeats'"),
    ]:
        refused_untouched(ws, message, *args)


def test_a_scheduler_that_is_not_an_address(ws):
    pytest.importorskip("distributed")
    (ws / "s.toml").write_text(SWEEP)
    res = wn("sweep", "run", "s.toml", "--scheduler", "notaurl", "--quiet")
    refused(res, "cannot reach the Dask scheduler notaurl", "--scheduler notaurl")


# ---------------------------------------------------------------- 21. Rich markup in user strings
def test_markup_in_names_is_printed_as_text(ws):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["[/]r"]), helper.make_node("Relu", ["[/]r"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ws / "[bold]m.onnx"))
    res = wn("points", ws / "[bold]m.onnx")
    assert res.returncode == 0 and "[/]r" in res.stdout and "[bold]m.onnx" in res.stdout, res
    res = wn("scan", ws / "[bold]m.onnx", "--data", "d.npz", "--mode", "walking", *FAST)
    assert res.returncode == 0 and "[/]r" in res.stdout, res
    refused(wn("scan", "m.onnx", "--data", "d.npz", "--sigmas", "lin:-1:1:3"), "'lin:-1:1:3'", "emoji in a grid")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        refused(wn("scan", "m.onnx", "--data", "d.npz", "--device", "cuda", *FAST), "'wn-onnx[gpu]'", "[gpu] hint")
    CASES.extend(["tensor named [/]r (points)", "tensor named [/]r (scan)"])


# ---------------------------------------------------------------- 23, 27. pipes, devices, folders as files
def test_pipes_devices_and_folders_are_not_read(ws):
    os.mkfifo(ws / "fifo")
    (ws / "s.toml").write_text(SWEEP)
    for path in ("fifo", "/dev/zero", str(ws)):
        kind = "a folder" if path == str(ws) else "a pipe or a device"
        refused_untouched(ws, f"is not a file but {kind}", *CHECK, "--config", path)
        refused_untouched(ws, f"is not a file but {kind}", "plan", path)
        refused_untouched(ws, f"is not a file but {kind}", "sweep", "plan", path)
        refused_untouched(ws, f"is not a file but {kind}", "apply-plan", "m.onnx", path, "--out", "o.onnx")
        if path != str(ws):  # a folder is streamed data (x.npy + y.npy, or .npz shards)
            refused_untouched(ws, f"is not a file but {kind}", "scan", "m.onnx", "--data", path, *FAST)
        refused_untouched(ws, f"is not a file but {kind}", "points", path)


def test_a_fifo_config_does_not_hang_a_real_process(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    res = wn_process("sweep", "plan", tmp_path / "fifo", timeout=60)
    refused(res, "is not a file but a pipe or a device", "FIFO sweep file (process)")


# ---------------------------------------------------------------- 22, 25. signals and processes
def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


JOBS = ["scan", "--mode", "walking", "--sigmas", "log:1e-2:1e3:25", "--repeats", "30", "--quiet", "--jobs", "2"]


@pytest.mark.slow
def test_ctrl_c_while_importing_prints_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "wn_onnx", "scan", "--quiet"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=like_a_shell)  # fmt: skip
    time.sleep(0.5)  # inside the imports of the command line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    CASES.append("Ctrl-C while importing")
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err


@pytest.mark.slow
def test_ctrl_c_with_jobs_while_workers_start_prints_no_worker_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "wn_onnx", *JOBS], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=like_a_shell)  # fmt: skip
    deadline = time.time() + 60
    while len(children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
    _, err = proc.communicate(timeout=60)
    CASES.append("Ctrl-C with --jobs 2 while workers start")
    assert proc.returncode == 130 and "Traceback" not in err, err


@pytest.mark.slow
def test_kill_9_of_a_jobs_scan_leaves_no_process_behind():
    proc = subprocess.Popen([sys.executable, "-m", "wn_onnx", *JOBS], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(children(proc.pid)) < 3 and time.time() < deadline:  # two workers and the resource tracker
        time.sleep(0.05)
    time.sleep(1.0)
    left = children(proc.pid)
    assert len(left) >= 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while any(alive(c) for c in left) and time.time() < deadline:
        time.sleep(0.2)
    CASES.append("kill -9 of scan --jobs 2")
    assert not any(alive(c) for c in left)


@pytest.mark.slow
def test_sigterm_writes_the_partial_report_like_ctrl_c(tmp_path):
    from tests.test_hardening import SLOW, run_until_stored

    out = tmp_path / "r.json"
    proc = run_until_stored([*SLOW, "--out", out], tmp_path / "r.json.sqlite", 2, signal.SIGTERM, tmp_path)
    CASES.append("SIGTERM during a scan")
    assert proc.returncode == 130, proc.stderr.read()
    assert json.loads(out.read_text())["partial"] is True


def test_stale_round_folders_are_removed(tmp_path, monkeypatch):
    from wn_onnx.engine import round_cache

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{round_cache.PREFIX}{dead.pid}-abc"
    mine = tmp_path / f"{round_cache.PREFIX}{os.getpid()}-abc"
    for folder in (stale, mine):
        folder.mkdir()
        (folder / "0.npy").write_bytes(b"x")
    monkeypatch.setattr(round_cache.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(round_cache, "_CLEANED", False)
    round_cache.RoundCache().close()
    CASES.append("stale adaptive round folder")
    assert not stale.exists() and mine.exists()


# ---------------------------------------------------------------- property tests: config and report readers
toml_scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)  # fmt: skip
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=4),
                        st.dictionaries(st.text(min_size=1, max_size=8), toml_scalars, max_size=3))  # fmt: skip


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict) -> str:
    return "".join(f"{json.dumps(k)} = {toml_literal(v)}\n" for k, v in doc.items())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from([*sorted(__import__("wn_onnx.gate", fromlist=["CONFIG"]).CONFIG), "other"]),
                       toml_values, max_size=5))  # fmt: skip
def test_property_check_config_is_typed_or_one_error(tmp_path, doc):
    from wn_onnx.gate import CONFIG, load_config

    path = tmp_path / "wn-onnx.toml"
    path.write_text(toml_document(doc))
    try:
        conf = load_config(path)
    except WnError as e:
        assert "\n" not in str(e)
        return
    for key, value in conf.items():
        if key != "sigmas":
            assert CONFIG[key].accepts(value) or (CONFIG[key].many and all(map(CONFIG[key].accepts, value)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["bn", "noise", "points", "sigmas", "seeds", "epochs", "clamp", "lr",
                                        "training_noise", "eval_repeats", "limit", "batch_size", "order"]),
                       toml_values, max_size=4))  # fmt: skip
def test_property_sweep_file_expands_or_one_error(tmp_path, doc):
    from wn_onnx.training.sweep import load_sweep

    path = tmp_path / "s.toml"
    path.write_text(toml_document({"dataset": "npz", "arch": "mlp", "sigmas": [0.1], "seeds": [0], **doc}))
    try:
        sweep = load_sweep(path)
    except WnError as e:
        assert "\n" not in str(e)
        return
    for run in sweep.runs:
        assert all(math.isfinite(s) and s >= 0 for s in np.atleast_1d(run["sigma"]))
        assert isinstance(run["bn"], bool) and run["epochs"] >= 1 and run["seed"] >= 0


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)
REPORT_PATHS = [("clean_accuracy",), ("num_classes",), ("noise",), ("points",), ("global",), ("points", 0),
                *[("points", 0, k) for k in ("index", "tensor", "op_type", "sigmas", "accuracy", "mu", "mu_err",
                                              "a_max", "a_min", "status", "fit")],
                ("global", "mu"), ("global", "accuracy"), ("global", "sigmas")]  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(REPORT_PATHS), json_values), min_size=1, max_size=3))
def test_property_report_reader_validates_or_one_error(tmp_path, edits):
    from wn_onnx.gate import Policy, evaluate_policy
    from wn_onnx.planner import load_report

    doc = report()
    for path, value in edits:
        target = doc
        with contextlib.suppress(KeyError, IndexError, TypeError):
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
    file = tmp_path / "r.json"
    file.write_text(json.dumps(doc))
    try:
        rep = load_report(file)
    except WnError as e:
        assert "\n" not in str(e)
        return
    # a report that reads back can be judged without any other exception
    with contextlib.suppress(WnError):
        evaluate_policy(rep, Policy(min_mu=0.1, max_drop=0.2), rep)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_property_any_bytes_as_report_config_or_sweep_are_one_error(tmp_path, payload):
    from wn_onnx.gate import load_config
    from wn_onnx.results.schema import read_report
    from wn_onnx.training.sweep import load_sweep

    path = tmp_path / "f.toml"
    path.write_bytes(payload)
    for reader in (read_report, load_config, load_sweep):
        with contextlib.suppress(WnError):
            reader(path)


CORPUS = 161  # test cases (functions × parameter sets) in this module; a case dropped by a refactor fails this


def corpus_size() -> int:
    """The test cases this module defines: each test function once per parameter set."""
    count = 0
    for name, function in globals().items():
        if name.startswith("test_") and callable(function):
            sizes = [len(m.args[1]) for m in getattr(function, "pytestmark", []) if m.name == "parametrize"]
            count += int(np.prod(sizes)) if sizes else 1
    return count


def test_the_corpus_keeps_its_cases():
    """Counted from the module's definitions, not from the cases that ran: a -k selection, a random
    order or a single test run checks the whole corpus. The sub-cases tried (CASES) are printed at the
    end of a run for the issue's note."""
    assert corpus_size() >= CORPUS, f"{corpus_size()} hostile test cases, fewer than the {CORPUS} of the corpus"


@pytest.fixture(scope="module", autouse=True)
def print_cases_tried():
    yield
    print(f"\nhostile cases tried in this module: {len(CASES)}")


# ---------------------------------------------------------------- metric plug-ins (issue 29, class 1)
PLUGINS = {
    "raises": ("def score(c, n, y):\n    raise ValueError('boom')\n", "failed: ValueError: boom"),
    "strings": ("def score(c, n, y):\n    return ['a'] * len(n)\n", "failed: ValueError: could not convert"),
    "signature": ("def score(c, n):\n    return c[:, 0] * 0\n", "failed: TypeError: score() takes 2"),
    "memory": ("def score(c, n, y):\n    raise MemoryError('no room')\n", "failed: MemoryError: no room"),
    "recursion": ("def score(c, n, y):\n    return score(c, n, y)\n", "failed: RecursionError"),
    "exit0": ("import sys\ndef score(c, n, y):\n    sys.exit(0)\n", "failed: SystemExit: 0"),
    "import_exit": ("import sys\nsys.exit(3)\ndef score(c, n, y):\n    pass\n", "cannot import"),
}


def plugin(ws: Path, name: str) -> str:
    """``--metric`` for plug-in ``name`` of PLUGINS, written into ``ws`` (an absolute path: each
    test's plug-in is its own module, whatever this process imported before)."""
    (ws / f"{name}.py").write_text(PLUGINS[name][0])
    return f"{ws / name}.py:score"


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_failing_metric_plugin_is_exit_2_naming_it(ws, name):
    spec = plugin(ws, name)
    refused_untouched(ws, f"metric {spec} {PLUGINS[name][1]}", "scan", "m.onnx", "--data", "d.npz", "--metric", spec, *FAST)


def test_a_plugin_exit_never_passes_a_ci_gate(ws):
    """``sys.exit(0)`` inside a plug-in is a failure in every command that takes --metric."""
    spec = plugin(ws, "exit0")
    (ws / "b.json").write_text(json.dumps(report(p_index=1)))
    for args in (["check", "m.onnx", "--data", "d.npz", "--min-mu", "0.1", *GRID],
                 ["analyze", "binarize", "m.onnx", "--at", "1", "--data", "d.npz"],
                 ["analyze", "mixed", "m.onnx", "--at", "1", "--data", "d.npz", "--sigma-mul-grid", "1", "--sigma-add-grid", "1"],
                 ["plan", "b.json", "--evaluate", "--model", "m.onnx", "--data", "d.npz", "--quiet"]):  # fmt: skip
        refused_untouched(ws, f"metric {spec} failed: SystemExit: 0", *args, "--metric", spec)
    refused_untouched(ws, "metric os:getcwd failed: TypeError", "scan", "m.onnx", "--data", "d.npz", "--metric", "os:getcwd", *FAST)


def test_a_metric_plugin_that_never_returns_is_ended_by_its_timeout(tmp_path):
    (tmp_path / "spin.py").write_text("def score(c, n, y):\n    while True:\n        pass\n")
    tiny_model(tmp_path / "m.onnx")
    data(tmp_path / "d.npz")
    before = snapshot(tmp_path)
    started = time.monotonic()
    res = wn_process("scan", "m.onnx", "--data", "d.npz", "--metric", "spin.py:score", "--metric-timeout", "0.5", *FAST,
                     cwd=tmp_path, timeout=60)  # fmt: skip
    refused(res, "metric spin.py:score failed: no result after 0.5 s on one batch", "metric plug-in that never returns")
    assert time.monotonic() - started < 30 and snapshot(tmp_path) == before
    refused(wn("scan", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "--metric-timeout", "0", *FAST),
            "the metric timeout must be a finite number of seconds > 0", "--metric-timeout 0")  # fmt: skip


def test_plugin_traceback_with_debug(ws):
    spec = plugin(ws, "raises")
    res = wn("scan", "m.onnx", "--data", "d.npz", "--metric", spec, *FAST, env={"WN_ONNX_DEBUG": "1"})
    CASES.append("plug-in traceback under WN_ONNX_DEBUG")
    assert res.returncode == 2 and "raise ValueError('boom')" in res.stderr and res.stderr.rstrip().endswith("boom")


def test_resume_computes_again_after_the_metric_plugin_changed(ws):
    """Stored curves are keyed by the plug-in's code, not only by its name (issue 29, class 2)."""
    tiny_model(ws / "eye.onnx", weights=np.eye(4, 3, dtype=np.float32))  # outputs that differ between samples
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    data(ws / "own.npz", x, x[:, :3].argmax(1))  # its own predictions: clean score 1, above a_min
    (ws / "agree.py").write_text("def score(c, n, y):\n    return (n.argmax(1) == y) * 1.0\n")
    args = ["scan", "eye.onnx", "--data", "own.npz", "--mode", "global", "--metric", f"{ws / 'agree.py'}:score", *FAST,
            "--out", "r.json", "--resume"]  # fmt: skip
    first = wn(*args)
    assert first.returncode == 0 and stored(ws / "r.json.sqlite") == 1, first.stderr
    (ws / "agree.py").write_text("def score(c, n, y):\n    return (n.argmax(1) == y) * 0.5\n")
    res = wn(*args)
    CASES.append("resume after the metric plug-in changed")
    assert res.returncode == 0 and stored(ws / "r.json.sqlite") == 2, res.stderr
    assert json.loads((ws / "r.json").read_text())["clean_accuracy"] == 0.5


# ---------------------------------------------------------------- --feed (issue 29, class 3)
def fed_model(path: Path) -> Path:
    """x (N, 4) float and k (1,) int64, a constant that is not data: y = (x · k) @ w."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "kf"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                                           helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_feeds_that_cannot_be_fed(ws):
    fed_model(ws / "k.onnx")
    np.save(ws / "s.npy", np.array(["a"]))
    (ws / "huge.npy").write_bytes(npy_header((10**12,), "<i8") + bytes(16))  # 8 TB declared, 16 bytes held
    np.savez(ws / "dk.npz", x=np.ones((6, 4), np.float32), k=np.ones((6, 1), np.int64), y=np.arange(6) % 3)
    scan = ["scan", "k.onnx", "--data", "d.npz", *FAST]
    for feeds, message in [
        (["k=s.npy"], "s.npy: feed k has dtype <U1, expected numbers"),
        (["k=huge.npy"], "huge.npy: declares 8000000000000 bytes of data but holds fewer"),
        (["k=1", "k=2"], "feed k is given twice"),
        (["k=-9223372036854775809"], "feed k: -9223372036854775809 is beyond 64-bit integers"),
        (["k=9223372036854775808"], "the value spans [9223372036854775808, 9223372036854775808], outside the model's int64"),
        (["k=1e19"], "outside the model's int64 input"),
    ]:
        refused_untouched(ws, message, *scan, *[a for f in feeds for a in ("--feed", f)])
    refused_untouched(ws, "feed k: dk.npz holds the input 'k' too; give it once", "scan", "k.onnx", "--data", "dk.npz",
                      "--feed", "k=1", *FAST)  # fmt: skip
    refused_untouched(ws, "--feed gives every input of the model a constant (x)", "scan", "m.onnx", "--data", "d.npz",
                      "--feed", "x=1", *FAST)  # fmt: skip


def test_feeds_are_exact_and_recorded_in_the_report(ws):
    fed_model(ws / "k.onnx")
    res = wn("scan", "k.onnx", "--data", "d.npz", "--feed", "k=9223372036854775807", "--mode", "global", *FAST, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["data"]["feeds"] == {"k": [2**63 - 1]}, res.stderr
    np.save(ws / "k.npy", np.array([5], np.int64))
    res = wn("scan", "k.onnx", "--data", "d.npz", "--feed", "k=k.npy", "--mode", "global", *FAST, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["data"]["feeds"] == {"k": [5]}, res.stderr
    plain = json.loads(wn("scan", "m.onnx", "--data", "d.npz", "--mode", "global", *FAST, "--json").stdout)
    CASES.extend(["--feed int64 maximum", "--feed recorded"])
    assert "feeds" not in plain["data"]  # reports without feeds are as before


def test_label_and_data_messages_name_the_real_cause(ws):
    """Issue 29, class 8: each message names what is wrong, not a neighbouring rule."""
    np.save(ws / "x.npy", np.ones((6, 4), np.float32))
    np.save(ws / "y2.npy", np.asfortranarray(np.zeros((6, 2), np.int64)))
    refused_untouched(ws, "labels y have shape (6, 2); top1 takes one integer label", "scan", "m.onnx", "--data", "x.npy",
                      "--labels", "y2.npy", *FAST)  # fmt: skip
    np.save(ws / "yu.npy", np.array([2**64 - 1, 0, 1, 2, 0, 1], np.uint64))
    refused_untouched(ws, "labels y reach 18446744073709551615", "scan", "m.onnx", "--data", "x.npy", "--labels", "yu.npy",
                      *FAST)  # fmt: skip
    refused_untouched(ws, "data file /dev/zero is not a file but a pipe or a device", "scan", "m.onnx", "--data",
                      "/dev/zero", "--labels", "yu.npy", *FAST)  # fmt: skip


# ---------------------------------------------------------------- shards and bombs (issue 29, class 7)
def test_a_shard_truncated_mid_scan_ends_the_scan_with_exit_2(ws):
    """A data file that changes under a scan is a data error, never walked points marked ``failed``
    with exit 0: a metric plug-in truncates the shards once the first curve is stored."""
    shards = ws / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    tiny_model(ws / "eye.onnx", weights=np.eye(4, 3, dtype=np.float32))  # outputs that differ between samples
    for i in range(3):
        x = rng.standard_normal((4, 4)).astype(np.float32)
        np.savez(shards / f"{i}.npz", x=x, y=x[:, :3].argmax(1))  # its own predictions: above a_min
    (ws / "cut.py").write_text(f"""import pathlib, sqlite3
def score(c, n, y):
    db = pathlib.Path({str(ws / "r.json.sqlite")!r})
    if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM curves").fetchone()[0]:
        for shard in pathlib.Path({str(shards)!r}).glob("*.npz"):
            shard.write_bytes(shard.read_bytes()[:100])
    return (n.argmax(1) == y) * 1.0
""")
    res = wn("scan", "eye.onnx", "--data", shards, "--mode", "walking", "--metric", f"{ws / 'cut.py'}:score", *FAST,
             "--batch-size", "4", "--out", "r.json")  # fmt: skip
    refused(res, ".npz: not a readable .npz archive (File is not a zip file)", "shard truncated mid-scan")
    assert stored(ws / "r.json.sqlite") == 1  # the curve finished before stays for --resume


def test_a_compressed_idx_is_measured_with_its_float32_copy(ws, monkeypatch):
    from wn_onnx.io.datasets.idx import read_idx

    monkeypatch.setattr(safeio, "memory_budget", lambda: 1 << 20)
    write_idx(ws / "imgs.gz", np.zeros((1000, 28, 28), np.uint8), 0x08)  # 0.78 MB of bytes, 3.1 MB as float32
    assert (ws / "imgs.gz").stat().st_size < 10_000
    with pytest.raises(WnError, match=r"declares 0\.00365 GiB of data, over the memory budget"):
        read_idx(ws / "imgs.gz")
    CASES.append("gzip IDX within the budget as bytes, over it as float32")


def test_an_npz_bomb_with_a_stratified_limit_is_refused_before_it_inflates(ws, monkeypatch):
    monkeypatch.setattr(safeio, "memory_budget", lambda: 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:  # 16 MB of zeros: every row is inflated to pick 10
            f.write(npy_header((1 << 20, 4)))
            for _ in range(16):
                f.write(bytes(1 << 20))
        z.writestr("y.npy", npy(np.arange(1 << 20, dtype=np.int64) % 3 > 0))
    (ws / "bomb.npz").write_bytes(buf.getvalue())
    refused_untouched(ws, "bomb.npz: declares 0.01", "scan", "m.onnx", "--data",
                      "bomb.npz", "--limit", "10", *FAST)  # fmt: skip


# ---------------------------------------------------------------- reports and stores read back (issue 29, class 5)
def test_a_stored_curve_whose_fit_contradicts_its_accuracies_is_computed_again(ws):
    args = ["scan", "m.onnx", "--data", "d.npz", *FAST, "--out", "r.json", "--resume"]
    assert wn(*args).returncode == 0
    reference = json.loads((ws / "r.json").read_text())
    with sqlite3.connect(ws / "r.json.sqlite") as con:
        for key, result in con.execute("SELECT key, result FROM curves").fetchall():
            con.execute("UPDATE curves SET result = ? WHERE key = ?",
                        (json.dumps({**json.loads(result), "mu": 123, "mu_err": 0.1, "status": "ok"}), key))  # fmt: skip
    res = wn(*args)
    CASES.append("store rows edited to mu 123, status ok")
    assert res.returncode == 0, res.stderr
    again = json.loads((ws / "r.json").read_text())
    assert again["points"] == reference["points"] and again["global"] == reference["global"]


# ---------------------------------------------------------------- stores and shared paths (issue 29, class 6)
@pytest.mark.parametrize("sidecar", ["", "-wal"])
def test_a_symlinked_store_is_never_written_through(ws, tmp_path_factory, sidecar):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "precious"
    elsewhere.write_bytes(b"")
    os.symlink(elsewhere, ws / f"r.json.sqlite{sidecar}")
    refused_untouched(ws, f"r.json.sqlite{sidecar} is a symbolic link; refusing to write the curve store through it",
                      "scan", "m.onnx", "--data", "d.npz", *FAST, "--out", "r.json")  # fmt: skip
    assert elsewhere.read_bytes() == b"" and not (ws / "r.json").exists()


def test_a_second_writer_of_a_store_is_refused(ws):
    from wn_onnx.results.store import CurveStore

    args = ["scan", "m.onnx", "--data", "d.npz", *FAST, "--out", "r.json"]
    first = CurveStore(ws / "r.json.sqlite")  # a scan writing this store
    try:
        res = wn(*args, "--seed", "1")
        refused(res, "r.json.sqlite is being written by another wn-onnx scan", "second writer of a store")
        assert not (ws / "r.json").exists()
    finally:
        first.close()
    assert wn(*args).returncode == 0  # released with the first writer


@pytest.mark.slow
def test_dask_scratch_space_is_the_runs_own_and_removed(tmp_path):
    pytest.importorskip("distributed")
    tiny_model(tmp_path / "m.onnx")
    data(tmp_path / "d.npz")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    res = wn_process("scan", "m.onnx", "--data", "d.npz", "--mode", "walking", "--workers", "1", *FAST, cwd=tmp_path,
                     env=env, timeout=120)  # fmt: skip
    CASES.append("--workers scratch space")
    assert res.returncode == 0, res.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # no dask-scratch-space/*.lock left in the temporary folder


# ---------------------------------------------------------------- messages that name the real cause (issue 29, class 8)
def test_no_raw_onnxruntime_line_reaches_the_terminal(tmp_path):
    """onnxruntime logs a failing kernel on the process's stderr itself; the tool's one line is enough."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")  # 3 values per sample: never 5
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, shape])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bad.onnx"))
    data(tmp_path / "d.npz")
    res = wn_process("scan", "bad.onnx", "--data", "d.npz", *FAST, cwd=tmp_path)
    refused(res, "onnxruntime failed: [ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape",
            "raw onnxruntime log lines")  # fmt: skip


def test_a_value_named_like_the_inserted_noise_is_named(ws):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["wn_sigma_add"]),
                               helper.make_node("Relu", ["wn_sigma_add"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ws / "collide.onnx"))
    refused_untouched(ws, "collide.onnx: the model names a value 'wn_sigma_add'; names starting with 'wn_' are those of "
                      "the noise wn-onnx inserts", "scan", "collide.onnx", "--data", "d.npz", *FAST)  # fmt: skip


def test_a_full_standard_output_is_named(tmp_path):
    with open("/dev/full", "w") as full:
        res = subprocess.run([sys.executable, "-m", "wn_onnx", "scan", "--mode", "global", *FAST, "--json"], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    refused(Ran(res.returncode, "", res.stderr), "cannot write the standard output: No space left on device",
            "--json > /dev/full")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
